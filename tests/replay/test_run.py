"""The replay run: the walk-forward never looks ahead, the account and the range are checked, the JSON is right."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest
from django.db.models import F
from django.utils import timezone

from execution.models import ExchangeAccount, Fill
from pairs.models import Candle, CointegrationRun, Level, PairStatistics
from replay import run as replay_run_module
from replay.lock import REPLAY_LOCK_TTL, replay_lock_acquire, replay_lock_release
from replay.models import ReplayLock
from replay.report import replay_summary, replay_trades
from replay.run import ReplayError, replay_run
from tests.factories import ExchangeAccountFactory
from tests.replay.replay_world import START, import_market, wipe_replay

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)


def test_walk_forward_replay_never_looks_ahead(shared_candles_dir):
    config = import_market(shared_candles_dir)
    end = START + timedelta(days=7, hours=12)
    result = replay_run(start=START, end=end, config=config)
    first = replay_trades(account=result.account)
    assert len(first) >= 3

    # Selection at each step read only bars up to the step's last closed bar (its clock is one bar later): the
    # formation window ends validation_bars before it, the validation runs up to it, and the grading windows end
    # there too.
    runs = list(CointegrationRun.objects.filter(pk__in=result.selection_runs).order_by("pk"))
    validation = timedelta(hours=config.validation_bars)
    assert [r.window_end for r in runs] == [START - validation, START + timedelta(days=7) - validation]
    assert [r.parameters["validation_end"] for r in runs] == [
        f"{moment:%Y-%m-%dT%H:%M:%SZ}" for moment in (START, START + timedelta(days=7))]
    stats = PairStatistics.objects.exclude(window=PairStatistics.Window.LIVE)
    assert stats.exists() and all(s.window_end <= START + timedelta(days=7) for s in stats)
    # Every fill is priced at the open of the bar opening at its clock (the first price after the signal, which the
    # bar that had just closed produced), moved by the slippage: fixed + factor x that closed bar's relative range.
    open_is_not_close = 0  # fills where the data tells the next open from the signal bar's close
    for fill in Fill.objects.select_related("order__instrument"):
        bar = Candle.objects.get(instrument=fill.order.instrument, open_time=fill.filled_at)
        reference = Candle.objects.get(instrument=fill.order.instrument, open_time=fill.filled_at - HOUR)
        open_is_not_close += bar.open != reference.close
        ranged = config.slippage_factor * (float(reference.high) - float(reference.low)) / float(reference.open)
        slip = Decimal(str(config.slippage)) + Decimal(repr(ranged))
        expected = bar.open * (1 + slip) if fill.order.side == "buy" else bar.open * (1 - slip)
        assert abs(fill.price - expected) < Decimal("1e-9"), fill
    assert open_is_not_close >= 3

    # The replay account now has trades: it is not reused. Nor are pairs selected on the data a replay would replay.
    with pytest.raises(ReplayError, match=r"account 'replay' already has \d+ trade\(s\)"):
        replay_run(start=START, end=end, config=config, reselect_every=None)
    other = ExchangeAccountFactory(name="other", mode="paper", level=Level.objects.get(number=1))
    with pytest.raises(ReplayError, match=r"the database already holds \d+ pair\(s\): the replay selects its pairs"):
        replay_run(start=START, end=end, config=config, account=other)
    with pytest.raises(ReplayError, match=r"\d+ pair\(s\) have signals at or after 2021-03-29T00:00:00Z"):
        replay_run(start=START, end=end, config=config, account=other, reselect_every=None)

    # Change every candle after T and replay again: whatever was decided before T is decided the same way.
    cut = START + timedelta(days=3, hours=6)
    assert any(t["closed_at"] and t["closed_at"] <= iso(cut) for t in first)
    assert any(t["opened_at"] > iso(cut) for t in first)
    wipe_replay()
    Candle.objects.filter(instrument__symbol="NEOUSDT", open_time__gt=cut).update(
        open=F("open") * Decimal("1.37"), high=F("high") * Decimal("1.37"), low=F("low") * Decimal("1.37"),
        close=F("close") * Decimal("1.37"),
    )  # fmt: skip
    second = replay_trades(account=replay_run(start=START, end=end, config=config).account)

    def before_cut(trades, field):
        return [t for t in trades if t[field] and t[field] <= iso(cut)]

    assert before_cut(second, "closed_at") == before_cut(first, "closed_at")
    opened = before_cut(first, "opened_at")
    assert [(t["y"], t["x"], t["side"], t["opened_at"], open_legs(t)) for t in before_cut(second, "opened_at")] == [
        (t["y"], t["x"], t["side"], t["opened_at"], open_legs(t)) for t in opened
    ]
    assert second != first, "the changed candles should change what happens after T"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def open_legs(trade: dict) -> list[dict]:
    return [leg for leg in trade["legs"] if leg["action"] == "open"]


def test_an_enabled_or_live_account_is_handled_before_anything_runs(shared_candles_dir):
    config = import_market(shared_candles_dir)
    level = Level.objects.get(number=1)
    real = ExchangeAccountFactory(name="real-one", mode="real", level=level)
    with pytest.raises(ReplayError, match=r"account 'real-one' is a real account: a replay trades on paper only"):
        replay_run(start=START, end=START + 2 * HOUR, config=config, account=real)

    mine = ExchangeAccountFactory(name="mine", mode="paper", level=level, enabled=True)
    result = replay_run(start=START, end=START + 2 * HOUR, config=config, account=mine, reselect_every=None)
    mine.refresh_from_db()
    assert not mine.enabled  # the live beat must not tick it between the replay's ticks
    assert result.bars == 3 and result.tick_statuses == {"ok": 3}
    assert [e for _, e in result.equity] == [mine.capital] * 3


def test_taking_a_paper_account_for_a_replay_is_audited_with_the_halts_it_deletes(shared_candles_dir):
    # A paper account with no trade yet: the replay disabled its bot and deleted its halts, a kill switch raised by
    # hand included, with nothing on the audit trail.
    from core.models import AuditEntry
    from tests.factories import HaltFactory

    config = import_market(shared_candles_dir)
    mine = ExchangeAccountFactory(name="mine", mode="paper", level=Level.objects.get(number=1), enabled=True)
    halt = HaltFactory(account=mine)
    replay_run(start=START, end=START + 2 * HOUR, config=config, account=mine, reselect_every=None)
    entry = AuditEntry.objects.get(action="prepare_replay_account")
    assert entry.channel == "command" and "(manage.py replay)" in entry.actor_label
    assert entry.target_id == str(mine.pk) and entry.details["disabled"] is True
    assert entry.details["halts_deleted"] == [f"#{halt.pk} manual (in force)"]
    assert entry.summary == (f"paper account mine taken for a replay: bot disabled; halts deleted: #{halt.pk} manual "
                             "(in force)")


def test_a_start_without_the_history_of_a_selection_is_refused_before_anything_runs(shared_candles_dir):
    """Every selection step would fail for want of history (logged at INFO only) and the replay would trade
    nothing, exit 0 and print all-zero figures: refused instead, naming the earliest start. The candles start on
    2020-12-01; a selection reads 500 + 200 bars (replay_world's windows)."""
    config = import_market(shared_candles_dir)
    early = datetime(2020, 12, 10, tzinfo=UTC)
    with pytest.raises(ReplayError, match=r"^--start 2020-12-10T00:00:00Z is too early for the replay's selection: "
                                          r"a selection step reads 700 bars \(lookback 500 or min_history_bars 500, "
                                          r"\+ validation_bars 200\) and the candles start at 2020-12-01T00:00:00Z; "
                                          r"the earliest start is 2020-12-30T03:00:00Z"):
        replay_run(start=early, end=early + 2 * 24 * HOUR, config=config)
    assert not ExchangeAccount.objects.exists() and not CointegrationRun.objects.exists()
    assert_free()
    # Without a selection an early start is fine (it trades the pairs as they are); the earliest start named is.
    assert replay_run(start=early, end=early + 2 * HOUR, config=config, reselect_every=None).bars == 3
    wipe_replay()
    earliest = datetime(2020, 12, 30, 3, tzinfo=UTC)
    assert replay_run(start=earliest, end=earliest + HOUR, config=config).bars == 2


# ---------------------------------------------------------------------------------------------------- the lock


def short_replay(config, **options):
    """Three bars on the pairs as they are (none): the lock's behaviour without the cost of a selection."""
    return replay_run(start=START, end=START + 2 * HOUR, config=config, reselect_every=None, **options)


def assert_free() -> None:
    lock = ReplayLock.objects.get()
    assert lock.expires_at is None


def test_a_second_replay_while_one_runs_is_refused_at_once(shared_candles_dir):
    config = import_market(shared_candles_dir)
    second = ExchangeAccountFactory(name="second", mode="paper", level=Level.objects.get(number=1), enabled=True)
    refused: list[ReplayError] = []

    def second_replay(done: int, total: int) -> None:
        if done == 1:  # the first replay holds the lock and has written its first bar
            with pytest.raises(ReplayError) as info:
                short_replay(config, account=second)
            refused.append(info.value)

    result = short_replay(config, progress=second_replay)

    assert result.bars == 3  # the first one went on to its end
    message = str(refused[0])
    holder = ReplayLock.objects.get()
    assert message.startswith(
        "another replay is running on this database (account 'replay', 2021-03-29T00:00:00Z to "
        f"2021-03-29T02:00:00Z; process {holder.owner}) since {iso(holder.acquired_at)}: wait for it to end, or "
        "stop it. Its lock expires at "
    )
    assert message.endswith("unless that replay renews it, so one that was killed blocks no longer than that")
    second.refresh_from_db()
    assert second.enabled  # the refused replay didn't get as far as preparing its account
    assert_free()


def test_a_lock_left_by_a_killed_replay_is_taken_over_once_expired(shared_candles_dir, caplog):
    config = import_market(shared_candles_dir)
    now = timezone.now()
    ReplayLock.objects.create(name="replay", owner="gone-host:4242:deadbeef", description="account 'old'",
                              acquired_at=now - REPLAY_LOCK_TTL * 3, expires_at=now - HOUR / 60)  # fmt: skip

    result = short_replay(config)

    assert result.bars == 3
    assert "replay lock taken over from gone-host:4242:deadbeef (account 'old')" in caplog.text
    lock = ReplayLock.objects.get()
    assert lock.owner != "gone-host:4242:deadbeef" and lock.expires_at is None


def test_a_live_lock_of_another_process_refuses_before_anything_is_written(shared_candles_dir):
    config = import_market(shared_candles_dir)
    replay_lock_acquire(owner="other-host:77:cafe0001", description="account 'replay', elsewhere")

    with pytest.raises(ReplayError, match=r"another replay is running on this database \(account 'replay', "
                                          r"elsewhere; process other-host:77:cafe0001\) since "):  # fmt: skip
        short_replay(config)

    assert not ExchangeAccount.objects.exists()
    assert ReplayLock.objects.get().owner == "other-host:77:cafe0001"  # still the other one's
    replay_lock_release(owner="other-host:77:cafe0001")
    assert short_replay(config).bars == 3


def test_the_lock_is_released_after_an_error_and_after_ctrl_c(shared_candles_dir):
    config = import_market(shared_candles_dir)

    def fail(done: int, total: int) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        short_replay(config, progress=fail)
    assert_free()

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        short_replay(config, progress=interrupt)
    assert_free()


def test_a_replay_that_lost_its_lock_stops(shared_candles_dir, monkeypatch):
    config = import_market(shared_candles_dir)
    monkeypatch.setattr(replay_run_module, "REPLAY_LOCK_RENEW_EVERY", timedelta(0))  # renewed after every bar

    def taken_over(done: int, total: int) -> None:
        if done == 1:  # as if the first bar outlasted the lease and another replay took it
            ReplayLock.objects.update(owner="other-host:1:beef", expires_at=timezone.now() + REPLAY_LOCK_TTL)

    with pytest.raises(ReplayError, match=r"this replay \(.+\) lost its lock: it went longer than 0:10:00 without "):
        short_replay(config, progress=taken_over)

    assert ReplayLock.objects.get().owner == "other-host:1:beef"  # not released: it is the other one's


def test_summary_figures():
    day = datetime(2021, 1, 1, tzinfo=UTC)
    trades = [{"pnl": "30"}, {"pnl": "-10"}, {"pnl": None}, {"pnl": "5"}]
    equity = [(day + HOUR, Decimal("1010")), (day + 2 * HOUR, Decimal("990")), (day + 25 * HOUR, Decimal("1025"))]
    summary = replay_summary(trades=trades, start_equity=Decimal("1000"), equity=equity)
    assert summary["total_trades"] == 3
    assert summary["win_rate"] == pytest.approx(2 / 3)
    assert summary["profit_factor"] == pytest.approx(3.5)
    assert summary["total_return"] == pytest.approx(0.025)
    assert summary["max_drawdown"] == pytest.approx(990 / 1010 - 1)
    # Daily closes 1000 (start), 990 (Jan 1), 1025 (Jan 2).
    returns = np.array([990 / 1000 - 1, 1025 / 990 - 1])
    assert summary["sharpe"] == pytest.approx(returns.mean() / returns.std(ddof=1) * np.sqrt(365))
    assert summary["sortino"] == pytest.approx(returns.mean() / np.sqrt(0.01**2 / 2) * np.sqrt(365))
    assert summary["expectancy"] == pytest.approx(25 / 3)
    assert (summary["start_equity"], summary["end_equity"]) == ("1000", "1025")
    no_loss = replay_summary(trades=[{"pnl": "1"}], start_equity=Decimal("1000"), equity=[])
    assert no_loss["profit_factor"] is None and no_loss["sharpe"] is None and no_loss["max_drawdown"] == 0.0
