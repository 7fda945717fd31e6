"""The reporting API of monitoring: performance by scope, the equity curve, positions, CSV, unknown parameters."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from execution.models import ExchangeAccount, Order, PairTrade
from tests.factories import (
    CandleFactory,
    DailyPnlSnapshotFactory,
    ExchangeAccountFactory,
    FillFactory,
    OrderFactory,
    PairTradeFactory,
    SignalFactory,
)

pytestmark = pytest.mark.django_db

T0 = datetime(2021, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)


def _closed(account, opened_h: int, closed_h: int, pnl: str, **extra):
    return PairTradeFactory(account=account, state=PairTrade.State.CLOSED, opened_at=T0 + opened_h * H,
                            closed_at=T0 + closed_h * H, realised_pnl=Decimal(pnl), **extra)


def test_performance_per_account_on_its_own_capital(api_client):
    small = ExchangeAccountFactory(name="small", capital=Decimal("1000"))
    big = ExchangeAccountFactory(name="big", capital=Decimal("9000"))
    _closed(small, 0, 12, "100")
    _closed(small, 6, 30, "-50")
    _closed(big, 0, 1, "90")

    one = api_client.get("/api/v1/performance/", {"account": "small", "start": "2021-03-01", "end": "2021-03-03"})
    assert one.status_code == 200
    data = one.json()
    assert data["label"] == "small (paper)" and data["combined"] is False
    assert data["total_return"] == pytest.approx(50 / 1000)
    assert data["max_drawdown"] == pytest.approx(50 / 1100)
    assert data["average_holding_hours"] == pytest.approx(18)
    # [0 h, 30 h] of the 72 h of 1-3 March.
    assert data["exposure"] == pytest.approx(30 / 72)
    # By id too; the combined paper view is labelled and on both accounts' capital.
    assert api_client.get("/api/v1/performance/", {"account": small.pk}).json()["label"] == "small (paper)"
    combined = api_client.get("/api/v1/performance/", {"mode": "paper"}).json()
    assert combined["combined"] is True and combined["label"].startswith("combined paper")
    assert combined["total_return"] == pytest.approx(140 / 10000)


def test_a_combined_view_never_mixes_paper_with_real_money(api_client):
    ExchangeAccountFactory(name="paper-1")
    real = ExchangeAccountFactory(name="real-1", mode=ExchangeAccount.Mode.REAL, capital=Decimal("5000"))
    _closed(real, 0, 1, "-100")

    mixed = api_client.get("/api/v1/performance/")
    assert mixed.status_code == 400
    assert "never mixes paper with real money" in mixed.json()["mode"][0]
    data = api_client.get("/api/v1/performance/", {"mode": "real"}).json()
    assert data["accounts"] == ["real-1"] and data["total_return"] == pytest.approx(-100 / 5000)


def test_performance_of_one_pair_and_period(api_client):
    account = ExchangeAccountFactory(capital=Decimal("1000"))
    first = _closed(account, 0, 2, "10")
    _closed(account, 0, 3, "-5")
    _closed(account, 48, 50, "7", pair=first.pair)
    data = api_client.get("/api/v1/performance/", {"account": account.name, "pair": first.pair_id,
                                                   "start": "2021-03-01T00:00:00Z", "end": "2021-03-02"}).json()
    assert data["total_trades"] == 1 and data["realised_pnl"] == "10.000000000000"


def test_a_trade_closed_without_a_known_result_is_counted_apart(api_client, staff_client):
    account = ExchangeAccountFactory(capital=Decimal("1000"))
    _closed(account, 0, 2, "10")
    PairTradeFactory(account=account, state=PairTrade.State.CLOSED, opened_at=T0, closed_at=T0 + 3 * H,
                     realised_pnl=None, exit_reason=PairTrade.ExitReason.RECONCILED)
    data = api_client.get("/api/v1/performance/", {"account": account.name, "start": "2021-03-01",
                                                   "end": "2021-03-01"}).json()
    assert (data["total_trades"], data["without_result"]) == (1, 1)
    later = api_client.get("/api/v1/performance/", {"account": account.name, "start": "2021-03-02"}).json()
    assert later["without_result"] == 0
    page = staff_client.get("/", {"scope": f"a{account.pk}", "start": "2021-03-01", "end": "2021-03-01"}).text
    assert 'id="without-result">1 trade(s) of this period were closed outside the bot' in page


def test_a_disabled_accounts_period_ends_with_its_last_active_day(api_client):
    """A finished replay's account: years of flat equity after it would read as daily returns of 0 %."""
    stopped = ExchangeAccountFactory(capital=Decimal("1000"), enabled=False)
    _closed(stopped, 0, 2, "10")
    _closed(stopped, 20, 30, "-4")  # closed on 2021-03-02
    data = api_client.get("/api/v1/performance/", {"account": stopped.name}).json()
    assert data["end"] == "2021-03-03T00:00:00Z" and data["total_trades"] == 2
    curve = api_client.get("/api/v1/equity/", {"account": stopped.pk}).json()
    assert curve[-1]["at"].startswith("2021-03-02T23:59:59")
    asked = api_client.get("/api/v1/performance/", {"account": stopped.name, "end": "2021-06-01"}).json()
    assert asked["end"] == "2021-06-02T00:00:00Z"  # a period asked for is the period shown
    running = ExchangeAccountFactory(capital=Decimal("1000"))
    _closed(running, 0, 2, "10")
    assert api_client.get("/api/v1/performance/", {"account": running.name}).json()["end"] > "2026"


def test_equity_curve_is_daily_with_marks_and_drawdown(api_client):
    # Day 1: +100 realised and -30 unrealised at its end (1,070); day 2: -50 realised, no mark (1,050); day 3 only
    # an open trade's mark of +200 (1,250). The drawdown is the fall from the running peak at each day's end.
    account = ExchangeAccountFactory(capital=Decimal("1000"))
    _closed(account, 0, 2, "100")
    _closed(account, 20, 30, "-50")
    DailyPnlSnapshotFactory(account=account, date=T0.date(), unrealised_pnl=Decimal("-30"))
    DailyPnlSnapshotFactory(account=account, date=(T0 + 48 * H).date(), unrealised_pnl=Decimal("200"))
    response = api_client.get("/api/v1/equity/", {"account": account.pk, "start": "2021-03-01", "end": "2021-03-03"})
    assert response.status_code == 200
    points = response.json()
    assert [p["equity"] for p in points] == [1000, 1070, 1050, 1250]
    assert [p["drawdown"] for p in points] == pytest.approx([0, 0, 20 / 1070, 0])
    assert points[0]["at"] is None and points[1]["at"] == "2021-03-01T23:59:59.999999Z"
    summary = api_client.get("/api/v1/performance/", {"account": account.pk, "start": "2021-03-01",
                                                      "end": "2021-03-03"}).json()
    assert summary["max_drawdown"] == pytest.approx(20 / 1070)
    # The same moments written with another offset are the same UTC days (not the offset's local dates).
    utc = {"account": account.pk, "start": "2021-03-01T00:00:00Z", "end": "2021-03-04T00:00:00Z"}
    local = {"account": account.pk, "start": "2021-03-01T02:00:00+02:00", "end": "2021-03-04T02:00:00+02:00"}
    for path in ("/api/v1/equity/", "/api/v1/performance/"):
        assert api_client.get(path, local).json() == api_client.get(path, utc).json(), path


def test_positions_with_unrealised_pnl_and_bands(api_client):
    trade = PairTradeFactory(opened_at=T0, side=PairTrade.Side.LONG_SPREAD, funding=Decimal("-0.5"))
    OrderFactory(trade=trade, leg="y", side=Order.Side.BUY, filled_qty=Decimal("10"), avg_price=Decimal("100"),
                 fee=Decimal("0.55"))
    OrderFactory(trade=trade, leg="x", instrument=trade.pair.x_instrument, side=Order.Side.SELL,
                 filled_qty=Decimal("8"), avg_price=Decimal("50"), fee=Decimal("0.22"))
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    CandleFactory(instrument=trade.pair.y_instrument, open_time=now - H, close=Decimal("103"))
    CandleFactory(instrument=trade.pair.x_instrument, open_time=now - H, close=Decimal("51"))
    SignalFactory(pair=trade.pair, bar_time=now - H, zscore=-1.25)

    rows = api_client.get("/api/v1/positions/", {"account": trade.account.name}).json()
    assert len(rows) == 1
    row = rows[0]
    # y: +10 x (103 - 100) = 30; x: -8 x (51 - 50) = -8.
    assert Decimal(row["unrealised_pnl"]) == Decimal("22")
    # What the equity counts: minus the fees paid (0.77), plus the funding (-0.5).
    assert (Decimal(row["fees_paid"]), Decimal(row["funding"]), Decimal(row["net_pnl"])) == (
        Decimal("0.77"), Decimal("-0.5"), Decimal("20.73"))
    assert [(leg["symbol"], leg["entry_price"], leg["current_price"]) for leg in row["legs"]] == [
        (trade.pair.y_instrument.symbol, "100.000000000000", "103.000000000000"),
        (trade.pair.x_instrument.symbol, "50.000000000000", "51.000000000000"),
    ]
    assert (row["zscore"], row["entry_band"], row["exit_band"], row["stop_band"]) == (-1.25, -2.0, 0.0, -4.0)
    assert row["held_hours"] > 24


def test_an_unknown_query_parameter_is_refused_by_name(api_client):
    for path in ("/api/v1/trades/", "/api/v1/performance/", "/api/v1/equity/", "/api/v1/fills/"):
        response = api_client.get(path, {"symbl": "BTCUSDT"})
        assert response.status_code == 400, path
        assert response.json() == {"symbl": ["unknown query parameter"]}


def test_a_limit_or_offset_on_an_answer_that_is_not_paged_is_refused(api_client):
    account = ExchangeAccountFactory(name="unpaged")
    for path, params in (("/api/v1/performance/", {"account": account.name}), ("/api/v1/equity/",
                         {"account": account.name}), ("/api/v1/positions/", {}), ("/api/v1/", {})):
        for name in ("limit", "offset"):
            response = api_client.get(path, {**params, name: "10"})
            assert response.status_code == 400 and response.json() == {name: ["unknown query parameter"]}, path
    assert api_client.get("/api/v1/trades/", {"limit": "10", "offset": "0"}).status_code == 200


def test_trades_filter_by_symbol_pair_and_account_name(api_client):
    wanted = PairTradeFactory()
    PairTradeFactory()
    by_symbol = api_client.get("/api/v1/trades/", {"symbol": wanted.pair.x_instrument.symbol.lower()}).json()
    assert [t["id"] for t in by_symbol["results"]] == [wanted.pk]
    by_pair = api_client.get("/api/v1/trades/", {"pair": wanted.pair_id}).json()
    assert [t["id"] for t in by_pair["results"]] == [wanted.pk]
    by_name = api_client.get("/api/v1/trades/", {"account": wanted.account.name}).json()
    assert [t["id"] for t in by_name["results"]] == [wanted.pk]


def test_ordering_and_page_size_bound(api_client):
    account = ExchangeAccountFactory()
    trades = [_closed(account, 0, h, pnl) for h, pnl in ((1, "5"), (2, "-3"), (3, "9"))]
    data = api_client.get("/api/v1/trades/", {"ordering": "realised_pnl"}).json()
    assert [t["id"] for t in data["results"]] == [trades[1].pk, trades[0].pk, trades[2].pk]
    data = api_client.get("/api/v1/trades/", {"ordering": "-realised_pnl,id"}).json()
    assert [t["id"] for t in data["results"]] == [trades[2].pk, trades[0].pk, trades[1].pk]
    # A field the list is not ordered by is refused by name, not ignored (the report would come back unordered).
    refused = api_client.get("/api/v1/trades/", {"ordering": "error,-nonsense"})
    assert refused.status_code == 400 and "'error', '-nonsense'" in refused.json()["ordering"][0]
    assert len(api_client.get("/api/v1/trades/", {"limit": 100_000}).json()["results"]) == 3


def test_every_list_reads_as_csv(api_client):
    fill = FillFactory()
    response = api_client.get("/api/v1/fills/", {"format": "csv"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == 1
    assert rows[0]["symbol"] == fill.order.instrument.symbol and rows[0]["price"] == "100.000000000000"
    assert api_client.get("/api/v1/fills/", {"format": "xlsx"}).status_code == 400
    for path in ("/api/v1/trades/", "/api/v1/orders/", "/api/v1/funding/", "/api/v1/pairs/", "/api/v1/levels/",
                 "/api/v1/pair-statistics/", "/api/v1/accounts/", "/api/v1/positions/", "/api/v1/pnl/daily/",
                 "/api/v1/equity/", "/api/v1/performance/", "/api/v1/halts/", "/api/v1/guard-events/"):
        answer = api_client.get(path, {"format": "csv"})
        assert answer.status_code == 200, path
        assert answer["Content-Type"].startswith("text/csv"), path
    trade_csv = api_client.get("/api/v1/trades/", {"format": "csv"}).content.decode()
    assert "orders" in trade_csv.splitlines()[0]
    # An empty list still has its header row: a reporting tool takes its columns from it.
    empty = api_client.get("/api/v1/halts/", {"format": "csv"}).content.decode()
    assert empty.splitlines() == ["id,account,account_name,pair,mode,source,trigger,reason,flatten,until,"
                                  "breach_multiple,created_at,cleared_at"]


def test_accounts_list_has_no_secret(api_client):
    ExchangeAccountFactory(api_key_env="STATARB_CRED_KEY", api_secret_env="STATARB_CRED_SECRET")
    text = api_client.get("/api/v1/accounts/", {"format": "csv"}).content.decode()
    assert "STATARB_CRED" not in text and "secret" not in text.splitlines()[0]


def test_the_equity_times_render_as_the_serializer_field_does():
    from datetime import datetime, timedelta, timezone

    from rest_framework import serializers

    from monitoring.api import iso_8601_renderer

    field = serializers.DateTimeField(allow_null=True)
    render = iso_8601_renderer(field)
    moments = [datetime(2021, 3, 1, 23, 59, 59, 999999, tzinfo=UTC),
               datetime(2021, 3, 2, 1, 0, tzinfo=timezone(timedelta(hours=2))), datetime(2021, 3, 2, 1, 0)]
    assert [render(m) for m in moments] == [field.to_representation(m) for m in moments]
    assert render(moments[0]) == "2021-03-01T23:59:59.999999Z" and render(None) is None
    custom = serializers.DateTimeField(format="%Y-%m-%d %H:%M")
    assert iso_8601_renderer(custom)(moments[0]) == "2021-03-01 23:59"


@pytest.mark.parametrize(("start", "end"), [("0001-01-01", None), (None, "9999-12-30"), (None, "9999-12-31"),
                                            ("2009-12-31", None), (None, "2100-01-02")])
def test_dates_outside_the_bounds_are_refused_whatever_their_form(api_client, start, end):
    # A date-only value skipped the bounds: a period of 8,000 years took seconds of CPU on every dashboard refresh.
    params = {k: v for k, v in (("start", start), ("end", end)) if v}
    response = api_client.get("/api/v1/performance/", params)
    assert response.status_code == 400
    assert "a moment between 2010 and 2100 is expected" in str(response.json())


@pytest.mark.parametrize("path", ["performance", "equity"])
def test_an_end_date_in_the_basic_iso_form_includes_its_day_as_the_extended_form_does(api_client, path):
    """20210302 is the ISO 8601 date 2021-03-02: it was read as the moment of its midnight (exclusive), so the whole
    last day of the period was left out of the figures without a word."""
    account = ExchangeAccountFactory(name="main")
    _closed(account, 0, 12, "100")
    _closed(account, 24, 36, "-40")  # closed on 2 March
    extended, basic = ({"account": "main", "start": start, "end": end}
                       for start, end in (("2021-03-01", "2021-03-02"), ("20210301", "20210302")))
    assert api_client.get(f"/api/v1/{path}/", basic).json() == api_client.get(f"/api/v1/{path}/", extended).json()
    if path == "performance":
        figures = api_client.get("/api/v1/performance/", basic).json()
        assert figures["end"] == "2021-03-03T00:00:00Z" and figures["total_trades"] == 2


@pytest.mark.parametrize("path", ["performance", "equity"])
@pytest.mark.parametrize(("account", "query", "named"), [
    ("live", {"start": "2099-01-01"}, "start"),  # after now: the period ended before it began
    ("stopped", {"start": "2022-01-01"}, "start"),  # after the disabled account's last active day
    ("stopped", {"end": "2020-12-31"}, "end"),  # before its first trade, where the period starts by default
])
def test_a_period_that_would_end_before_it_starts_is_a_400_naming_the_parameter(api_client, path, account, query,
                                                                                  named):
    """Only one end of the period given, the other by default: an answer for start 2099-01-01, end today, came back
    200 with figures (a return and a drawdown of 0) of a period that does not exist."""
    ExchangeAccountFactory(name="live")
    _closed(ExchangeAccountFactory(name="stopped", enabled=False), 0, 5, "10")
    response = api_client.get(f"/api/v1/{path}/", {"account": account, **query})
    assert response.status_code == 400, response.content
    assert list(response.json()) == [named] and "before it starts" in response.json()[named][0]


def test_positions_csv_without_positions_still_has_its_header(api_client):
    account = ExchangeAccountFactory(name="idle")

    response = api_client.get("/api/v1/positions/", {"account": account.name, "format": "csv"})

    assert response.status_code == 200
    header = response.content.decode().splitlines()[0].split(",")
    assert header[:4] == ["trade", "account", "mode", "pair"] and header[-1] == "legs"


def test_positions_of_an_unknown_account_is_a_400_keyed_by_account(api_client):
    response = api_client.get("/api/v1/positions/", {"account": "zzz"})
    assert response.status_code == 400
    assert response.json() == {"account": ["no account with id or name 'zzz'"]}


@pytest.mark.parametrize("path", ["performance", "equity"])
def test_an_unknown_level_is_a_400_naming_the_levels(api_client, path):
    # Like an unknown account or pair: level=99 answered a scope of no account, 0 trades, 200.
    response = api_client.get(f"/api/v1/{path}/", {"mode": "paper", "level": 99})

    assert response.status_code == 400
    assert response.json() == {"level": ["no level 99 (levels: 0, 1, 2, 3)"]}


@pytest.mark.parametrize("path", ["performance", "equity"])
def test_a_mode_or_level_that_contradicts_the_account_is_refused(api_client, path):
    account = ExchangeAccountFactory(name="replay", mode=ExchangeAccount.Mode.PAPER)

    wrong_mode = api_client.get(f"/api/v1/{path}/", {"account": "replay", "mode": "demo"})
    assert wrong_mode.status_code == 400 and "mode" in wrong_mode.json()
    wrong_level = api_client.get(f"/api/v1/{path}/", {"account": "replay", "level": account.level.number + 2})
    assert wrong_level.status_code == 400 and "level" in wrong_level.json()
    agreeing = api_client.get(f"/api/v1/{path}/", {"account": "replay", "mode": "paper",
                                                   "level": account.level.number})
    assert agreeing.status_code == 200
