"""`manage.py replay` on a freshly migrated database holding only candles imported from the shared data."""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from io import StringIO

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from execution.models import ExchangeAccount, Fill, Order, PairTrade, Signal
from execution.sizing import LegFilters, size_pair_trade
from notifications.models import Delivery, Notification
from notifications.sender import notifications_send
from pairs.models import CointegrationRun, Pair
from pairs.quant.performance import trade_metrics
from replay.lock import replay_lock_acquire
from tests.fakes.telegram import ALERTS_CHAT_ID, fake_telegram  # noqa: F401
from tests.replay.replay_world import (
    LEG_KEYS,
    SUMMARY_KEYS,
    TRADE_KEYS,
    cash_flow,
    db_trades,
    import_market,
    parsed,
)

pytestmark = pytest.mark.django_db
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def test_replay_writes_trades_and_a_json_that_matches_the_database(shared_candles_dir, tmp_path):
    import_market(shared_candles_dir)
    assert not ExchangeAccount.objects.exists() and not Pair.objects.exists()
    path = tmp_path / "replay.json"
    out = StringIO()

    call_command("replay", start="2021-03-29", end="2021-04-04", json_path=path, stdout=out, verbosity=0)

    # The defaults it creates: a disabled paper account on level 1 with the documented capital and limits.
    account = ExchangeAccount.objects.get()
    assert (account.name, account.mode, account.level.number, account.enabled) == ("replay", "paper", 1, False)
    assert (account.capital, account.per_trade_budget, account.max_concurrent_trades) == (10000, 500, 10)
    # Written to the database like live trading: selection, signals, trades, orders, fills, notifications.
    assert CointegrationRun.objects.count() == 1  # one walk-forward step in a 7-day replay
    assert Pair.objects.filter(level__number=1).exists()
    assert Signal.objects.exists()
    trades = PairTrade.objects.filter(account=account)
    assert trades.count() >= 3
    assert Order.objects.filter(trade__account=account).count() == 4 * trades.count()
    assert Fill.objects.filter(order__trade__account=account).count() == 4 * trades.count()
    assert Notification.objects.filter(topic="trade_opened").count() == trades.count()
    assert Notification.objects.filter(topic="trade_closed").count() == trades.filter(state="closed").count()
    # Without --notify they are kept, held, and nothing is ever sent.
    assert set(Notification.objects.values_list("status", flat=True)) == {Notification.Status.HELD}
    assert not Delivery.objects.exists()

    data = json.loads(path.read_text())
    assert set(data) == {"summary", "trades", "halts", "guard_events", "execution_delay"}
    summary = data["summary"]
    assert set(summary) == SUMMARY_KEYS
    assert len(data["trades"]) == trades.count()
    for trade in data["trades"]:
        assert set(trade) == TRADE_KEYS
        assert ISO_Z.match(trade["opened_at"]) and ISO_Z.match(trade["closed_at"])
        assert all(set(leg) == LEG_KEYS for leg in trade["legs"])
        assert all(isinstance(trade[k], str) for k in ("pnl", "fees", "funding"))

    # The trades of the JSON are the database's rows.
    json_trades = [parsed(t) for t in data["trades"]]
    assert json_trades == db_trades(account)
    # Each trade's PnL is its legs' cash flows net of fees, plus funding; its legs end flat.
    for trade in json_trades:
        legs = trade["legs"]
        assert {leg["action"] for leg in legs} == {"open", "close"} and len(legs) == 4
        # exact up to the PnL column's 12 decimals: a cash flow (qty x a price moved by the variable slippage) has more
        flows = sum(cash_flow(leg) for leg in legs) - sum(leg["fee"] for leg in legs) + trade["funding"]
        assert abs(trade["pnl"] - flows) < Decimal("1e-11")
        assert trade["fees"] == sum(leg["fee"] for leg in legs) > 0
        for symbol in {leg["symbol"] for leg in legs}:
            held = sum(leg["qty"] if leg["side"] == "buy" else -leg["qty"] for leg in legs if leg["symbol"] == symbol)
            assert held == 0, (trade, symbol)
        assert trade["opened_at"] < trade["closed_at"]
        assert trade["signal_at"] <= trade["opened_at"]

    # One hedge ratio end to end: the entry signal's (its spread's rolling fit) sized both legs and is the trade's.
    for trade in trades.select_related("entry_signal", "pair__y_instrument", "pair__x_instrument"):
        signal = trade.entry_signal
        assert trade.hedge_ratio == signal.hedge_ratio is not None and trade.entry_zscore == signal.zscore
        opens = {o.leg: o for o in trade.orders.filter(action=Order.Action.OPEN)}
        sized = size_pair_trade(
            side=trade.side, hedge_ratio=signal.hedge_ratio, budget_per_leg=account.per_trade_budget,
            y_price=opens["y"].reference_price, x_price=opens["x"].reference_price,
            y_filters=LegFilters(trade.pair.y_instrument.qty_step, None, None, None),
            x_filters=LegFilters(trade.pair.x_instrument.qty_step, None, None, None),
        )
        assert (opens["y"].qty, opens["x"].qty) == (sized.y.qty, sized.x.qty) == (trade.y_qty, trade.x_qty)
    assert any(t.hedge_ratio != t.pair.hedge_ratio for t in trades), "the rolling fit should differ from screening"

    # The summary, recomputed from the trades and the equities.
    pnls = [t["pnl"] for t in json_trades if t["pnl"] is not None]
    metrics = trade_metrics(np.array([float(p) for p in pnls]))
    assert summary["total_trades"] == len(pnls) == trades.count()
    assert summary["win_rate"] == pytest.approx(sum(p > 0 for p in pnls) / len(pnls))
    assert summary["profit_factor"] == pytest.approx(metrics.profit_factor)
    start_equity, end_equity = Decimal(summary["start_equity"]), Decimal(summary["end_equity"])
    assert start_equity == account.capital
    assert summary["total_return"] == pytest.approx(float(end_equity / start_equity - 1), rel=1e-12)
    # Nothing is open at the end: the equity moved by exactly the trades' PnL.
    assert abs(end_equity - start_equity - sum(pnls)) < Decimal("1e-8")
    assert -1 < summary["max_drawdown"] < 0
    assert summary["sharpe"] is None or isinstance(summary["sharpe"], float)

    # The execution model's sensitivity: the traded pairs' vectorised backtest at 0 and 1 bar of delay.
    delay = data["execution_delay"]
    assert (delay["replay_delay_bars"], delay["start"], delay["end"]) == (0, "2021-03-29T00:00:00Z",
                                                                           "2021-04-04T23:00:00Z")
    traded = {f"{t['y']}/{t['x']}" for t in data["trades"]}
    assert set(delay["pairs"]) == traded
    assert set(delay["backtest"]) == {"0", "1"}
    for kpis in delay["backtest"].values():
        assert set(kpis) == {"trades", "win_rate", "profit_factor", "mean_return", "total_return"}
        assert kpis["trades"] >= 1
    assert delay["backtest"]["0"] != delay["backtest"]["1"]  # a bar later is another price

    lines = out.getvalue().splitlines()
    assert lines[0].startswith("replay on 'replay': 168 bars, 2021-03-29 00:00 to 2021-04-04 23:00 UTC, 1 selection")
    assert lines[1].startswith(f"{len(pnls)} finished trade(s) (0 still open), win rate ")
    shown = "∞ (no losing trade)" if summary["profit_factor_unbounded"] else f"{summary['profit_factor']:.2f}"
    assert f"profit factor {shown}, return " in lines[1]  # not "n/a" when no trade lost
    assert lines[2].startswith("execution: fills at the next bar's open + 0 bar(s) of delay; vectorised backtest of "
                               f"the {len(traded)} traded pair(s) over the replayed bars (per trade, y notional 1, "
                               f"each pair on every bar: not the account's return; in sample, the bars before each "
                               f"pair was chosen included: read the difference between the delays, not the figures) "
                               f"at delay 0: "
                               f"{delay['backtest']['0']['trades']} trade(s)")
    assert "; delay 1: " in lines[2] and "mean return per trade " in lines[2] and "total return" not in lines[2]
    assert lines[3] == f"guard: {len(data['halts'])} halt(s), {len(data['guard_events'])} event(s)"
    assert lines[-1] == f"wrote {path}"

    # A second replay on the same database refuses: the account has trades (and the pairs were selected).
    with pytest.raises(CommandError, match=r"account 'replay' already has \d+ trade\(s\)"):
        call_command("replay", start="2021-03-29", end="2021-04-04", verbosity=0)


def test_replay_with_notify_sends_its_notifications(shared_candles_dir, fake_telegram, settings):  # noqa: F811
    settings.TELEGRAM_BOT_TOKEN = fake_telegram.token
    settings.TELEGRAM_API_URL = fake_telegram.base_url
    settings.TELEGRAM_CHAT_IDS = str(ALERTS_CHAT_ID)
    settings.TELEGRAM_MIN_INTERVAL_S = 0.0
    settings.NOTIFY_FOLD_WINDOW_S = 0.0
    fake_telegram.set_rate_limits(enabled=False)
    import_market(shared_candles_dir)

    call_command("replay", start="2021-03-29", end="2021-04-01", notify=True, stdout=StringIO(), verbosity=0)

    notes = Notification.objects.all()
    assert notes.exists() and not notes.filter(status=Notification.Status.HELD).exists()
    notifications_send(budget_s=30)
    assert len(fake_telegram.delivered(ALERTS_CHAT_ID)) == notes.count()


@pytest.mark.parametrize(
    "options,message",
    [
        ({"start": "2021-13-01"}, r"--start '2021-13-01' is not an ISO 8601 date"),
        ({"end": "yesterday"}, r"--end 'yesterday' is not an ISO 8601 date"),
        ({"start": "2021-04-05", "end": "2021-04-01"}, r"--start 2021-04-05 00:00 is after --end 2021-04-01 23:00"),
        ({"start": "2022-01-01", "end": "2022-01-31"}, r"no 1h candles of bybit between 2022-01-01T00:00:00Z"),
        # It used to exit 0 with "0 selection(s)" and all-zero figures, the reason an INFO log line only.
        ({"start": "2020-12-10", "end": "2020-12-12"}, r"^--start 2020-12-10T00:00:00Z is too early for the replay's "
                                                       r"selection: .* the earliest start is 2020-12-30T03:00:00Z"),
        ({"reselect_every_days": -1}, r"^--reselect-every-days must be a number from 0 to 3650 days, got -1$"),
        ({"reselect_every_days": math.nan}, r"^--reselect-every-days must be a number from 0 to 3650 days, got nan$"),
        ({"reselect_every_days": math.inf}, r"^--reselect-every-days must be a number from 0 to 3650 days, got inf$"),
        ({"reselect_every_days": 1e12}, r"^--reselect-every-days must be a number from 0 to 3650 days, got 1e\+12$"),
        ({"reselect_every_days": 1e-9}, r"^--reselect-every-days 1e-09 is shorter than one 1h bar: 0 \(no selection\) "
                                        r"or at least 0.0416667$"),
        ({"start": "0001-01-01T00:00+01:00"}, r"--start '0001-01-01T00:00\+01:00' is outside the dates this program "),
        ({"account": "nobody"}, r"no account named 'nobody'"),
        ({"execution_delay_bars": -1}, r"^--execution-delay-bars must be a number from 0 to 24 bars, got -1$"),
        ({"execution_delay_bars": 25}, r"^--execution-delay-bars must be a number from 0 to 24 bars, got 25$"),
    ],
)
def test_bad_options_name_the_problem(shared_candles_dir, options, message):
    import_market(shared_candles_dir)
    with pytest.raises(CommandError, match=message):
        call_command("replay", verbosity=0, **options)
    assert not PairTrade.objects.exists()


@pytest.mark.parametrize("where", ["missing directory", "a directory"])
def test_an_unwritable_json_path_is_refused_before_the_replay_runs(shared_candles_dir, tmp_path, where):
    import_market(shared_candles_dir)
    path = tmp_path / "nowhere" / "replay.json" if where == "missing directory" else tmp_path

    with pytest.raises(CommandError, match=f"^--json {re.escape(str(path))}: "):
        call_command("replay", start="2021-03-29", end="2021-03-29", json_path=path, verbosity=0)

    assert not ExchangeAccount.objects.exists()
    assert not CointegrationRun.objects.exists()


def test_a_second_replay_is_refused_with_who_runs_and_since_when(shared_candles_dir):
    import_market(shared_candles_dir)
    replay_lock_acquire(owner="box:4321:0badc0de", description="account 'replay', 2021-03-01T00:00:00Z to "
                                                             "2021-04-01T00:00:00Z")  # fmt: skip

    with pytest.raises(CommandError, match=r"^another replay is running on this database \(account 'replay', "
                                           r"2021-03-01T00:00:00Z to 2021-04-01T00:00:00Z; process box:4321:0badc0de\) "
                                           r"since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: wait for it to end"):  # fmt: skip
        call_command("replay", start="2021-03-29", end="2021-03-29", verbosity=0)

    assert not ExchangeAccount.objects.exists()


def test_an_empty_database_says_to_import_candles_first():
    with pytest.raises(CommandError, match=r"no 1h candles of bybit are stored: import them first"):
        call_command("replay", verbosity=0)


def test_a_history_shorter_than_one_selection_step_is_refused(shared_candles_dir):
    config = import_market(shared_candles_dir)
    config.lookback_bars = 6000
    config.save()
    needs = r"shorter than the 6200 bars one selection step needs \(lookback 6000 or min_history_bars 500, \+ valid"
    with pytest.raises(CommandError, match=needs):
        call_command("replay", verbosity=0)


def test_replay_with_console_prints_each_notification_and_keeps_them_held(shared_candles_dir,
                                                                         django_capture_on_commit_callbacks):
    import_market(shared_candles_dir)
    out = StringIO()
    # Each bar commits (and prints) in a real run; the test's transaction holds the commits until the block ends.
    with django_capture_on_commit_callbacks(execute=True):
        call_command("replay", start="2021-03-29", end="2021-04-01", console=True, stdout=out, verbosity=0)

    notes = list(Notification.objects.order_by("pk"))
    assert notes and {n.status for n in notes} == {Notification.Status.HELD}
    assert not Delivery.objects.exists()  # printed, not sent
    printed = [line for line in out.getvalue().splitlines() if line.startswith("[")]
    assert printed == [f"[{n.severity}] {n.topic}: {n.text.splitlines()[0]}" for n in notes]
    assert any(line.startswith("[info] trade_opened: ") for line in printed)


def test_replay_without_console_prints_no_notification(shared_candles_dir, django_capture_on_commit_callbacks):
    import_market(shared_candles_dir)
    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("replay", start="2021-03-29", end="2021-04-01", stdout=out, verbosity=0)
    assert Notification.objects.exists()
    assert not [line for line in out.getvalue().splitlines() if line.startswith("[")]
