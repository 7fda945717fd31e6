"""The risk reporting API: the performance summary computed by hand, daily PnL filters."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from execution.models import PairTrade
from tests.factories import DailyPnlSnapshotFactory, ExchangeAccountFactory, PairTradeFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2021, 3, 1, tzinfo=UTC)


def _closed(account, hours: int, pnl: str, fees: str = "0", funding: str = "0"):
    return PairTradeFactory(
        account=account,
        state=PairTrade.State.CLOSED,
        opened_at=T0,
        closed_at=T0 + timedelta(hours=hours),
        realised_pnl=Decimal(pnl),
        fees=Decimal(fees),
        funding=Decimal(funding),
    )


def test_performance_of_known_closed_trades(api_client):
    account = ExchangeAccountFactory(capital=Decimal("10000"))
    # Created out of order on purpose: the equity curve follows closing time, not insertion order. One close a day:
    # the drawdown is measured on the end-of-day equity.
    _closed(account, 73, "-100", fees="2", funding="-1")
    _closed(account, 49, "200", fees="3", funding="0.5")
    _closed(account, 25, "-50", fees="1", funding="0")
    _closed(account, 1, "100", fees="4", funding="0.25")
    # Still open, or failed before any leg filled (no result): not counted.
    PairTradeFactory(account=account, state=PairTrade.State.OPEN)
    PairTradeFactory(account=account, state=PairTrade.State.FAILED, realised_pnl=None, closed_at=T0)

    response = api_client.get("/api/v1/performance/")

    assert response.status_code == 200
    data = response.json()
    assert data["total_trades"] == 4
    assert data["win_rate"] == pytest.approx(0.5)
    assert data["profit_factor"] == pytest.approx(300 / 150)
    assert data["profit_factor_unbounded"] is False
    assert data["realised_pnl"] == "150.000000000000"
    assert data["fees"] == "10.000000000000"
    assert data["funding"] == "-0.250000000000"
    assert data["capital"] == "10000.000000000000"
    assert data["total_return"] == pytest.approx(150 / 10000)
    # Equity at the days' ends: 10000 -> 10100 -> 10050 -> 10250 -> 10150; the deepest fall is 10250 -> 10150.
    assert data["max_drawdown"] == pytest.approx(100 / 10250)


def test_unwound_trade_with_a_result_counts(api_client):
    account = ExchangeAccountFactory(capital=Decimal("10000"))
    _closed(account, 1, "100")
    PairTradeFactory(account=account, state=PairTrade.State.UNWOUND, realised_pnl=Decimal("-30"),
                     closed_at=T0 + timedelta(hours=2))

    data = api_client.get("/api/v1/performance/").json()

    assert data["total_trades"] == 2
    assert data["realised_pnl"] == "70.000000000000"
    assert data["profit_factor"] == pytest.approx(100 / 30)


def test_performance_of_one_account(api_client):
    account = ExchangeAccountFactory(capital=Decimal("2000"))
    other = ExchangeAccountFactory(capital=Decimal("8000"))
    _closed(account, 1, "-40")  # day 1 ends at 1960: 40 below the capital
    _closed(account, 25, "100")
    _closed(other, 1, "-500")

    data = api_client.get("/api/v1/performance/", {"account": account.pk}).json()

    assert data["total_trades"] == 2
    assert data["capital"] == "2000.000000000000"
    assert data["total_return"] == pytest.approx(60 / 2000)
    assert data["profit_factor"] == pytest.approx(100 / 40)
    assert data["max_drawdown"] == pytest.approx(40 / 2000)

    everything = api_client.get("/api/v1/performance/").json()
    assert everything["total_trades"] == 3
    assert everything["capital"] == "10000.000000000000"
    assert everything["total_return"] == pytest.approx(-440 / 10000)

    unknown = api_client.get("/api/v1/performance/", {"account": 999_999})
    assert unknown.status_code == 400
    assert "999999" in unknown.json()["account"][0]


def test_profit_factor_without_a_losing_trade_is_null_and_flagged(api_client):
    account = ExchangeAccountFactory(capital=Decimal("1000"))
    _closed(account, 1, "50")
    _closed(account, 2, "25")

    data = api_client.get("/api/v1/performance/").json()

    assert data["profit_factor"] is None
    assert data["profit_factor_unbounded"] is True
    assert data["win_rate"] == pytest.approx(1.0)
    assert data["max_drawdown"] == 0.0
    assert data["total_return"] == pytest.approx(0.075)


def test_performance_without_trades(api_client):
    ExchangeAccountFactory(capital=Decimal("1000"))

    data = api_client.get("/api/v1/performance/").json()

    assert data["total_trades"] == 0
    assert data["win_rate"] is None
    assert data["profit_factor"] is None
    assert data["profit_factor_unbounded"] is False
    assert data["realised_pnl"] == "0.000000000000"
    assert data["total_return"] == 0.0


def test_performance_without_capital_has_no_return_nor_drawdown(api_client):
    account = ExchangeAccountFactory(capital=Decimal("0"))
    _closed(account, 1, "10")
    data = api_client.get("/api/v1/performance/").json()
    assert data["total_return"] is None
    assert data["max_drawdown"] is None


def test_daily_pnl_date_filters(api_client):
    account = ExchangeAccountFactory(name="bybit-main")
    other = ExchangeAccountFactory(name="bybit-second")
    for offset in range(4):
        day = date(2021, 3, 1) + timedelta(days=offset)
        DailyPnlSnapshotFactory(account=account, date=day, realised_pnl=Decimal(offset))
        DailyPnlSnapshotFactory(account=other, date=day, realised_pnl=Decimal(10 + offset))

    def rows(**params):
        response = api_client.get("/api/v1/pnl/daily/", params)
        assert response.status_code == 200
        return [(r["date"], r["account"], r["realised_pnl"]) for r in response.json()["results"]]

    assert len(rows()) == 8
    assert rows(date_from="2021-03-03") == [
        ("2021-03-03", "bybit-main", "2.000000000000"),
        ("2021-03-03", "bybit-second", "12.000000000000"),
        ("2021-03-04", "bybit-main", "3.000000000000"),
        ("2021-03-04", "bybit-second", "13.000000000000"),
    ]
    assert rows(date_to="2021-03-01") == [
        ("2021-03-01", "bybit-main", "0.000000000000"),
        ("2021-03-01", "bybit-second", "10.000000000000"),
    ]
    assert rows(date_from="2021-03-02", date_to="2021-03-03", account=account.pk) == [
        ("2021-03-02", "bybit-main", "1.000000000000"),
        ("2021-03-03", "bybit-main", "2.000000000000"),
    ]
    assert rows(date_from="2021-04-01") == []


def test_daily_pnl_rejects_a_malformed_date(api_client):
    response = api_client.get("/api/v1/pnl/daily/", {"date_from": "not-a-date"})
    assert response.status_code == 400


@pytest.mark.parametrize("path", ["/api/v1/performance/", "/api/v1/pnl/daily/"])
def test_anonymous_requests_are_refused(client, path):
    assert client.get(path).status_code in (401, 403)


def test_halts_and_guard_events_name_their_account_beside_its_id(api_client):
    from tests.factories import GuardEventFactory, HaltFactory

    account = ExchangeAccountFactory(name="named-acct")
    HaltFactory(account=account, reason="by hand")
    HaltFactory(account=None, reason="every account")
    GuardEventFactory(account=account)
    halts = api_client.get("/api/v1/halts/").json()["results"]
    assert sorted((h["account"], h["account_name"]) for h in halts if h["account"]) == [(account.pk, "named-acct")]
    assert [h["account_name"] for h in halts if h["account"] is None] == [None]
    events = api_client.get("/api/v1/guard-events/").json()["results"]
    assert [(e["account"], e["account_name"]) for e in events] == [(account.pk, "named-acct")]


def test_active_halts_are_those_in_force_not_those_whose_latch_ended_before_the_guard_swept_them(api_client):
    """A daily-loss halt latches until midnight; until the guard's next cycle marks it cleared, it stays uncleared.
    ``?active=true`` listed it as active although the bots no longer obey it (and while the guard is stopped, for
    good); ``?active=false`` left it out."""
    from django.utils import timezone

    from tests.factories import HaltFactory

    now = timezone.now()
    standing = HaltFactory(reason="kill switch", until=None)
    latched = HaltFactory(reason="daily loss", until=now + timedelta(hours=1))
    ended = HaltFactory(reason="daily loss yesterday", until=now - timedelta(minutes=1))
    cleared = HaltFactory(reason="cleared", cleared_at=now - timedelta(hours=1))

    def ids(active: str) -> set[int]:
        return {h["id"] for h in api_client.get("/api/v1/halts/", {"active": active}).json()["results"]}

    assert ids("true") == {standing.pk, latched.pk}
    assert ids("false") == {ended.pk, cleared.pk}
