"""A bot tick costs a constant number of queries, whatever the number of pairs and open trades (issue #5).

Counted: every statement of the tick as the live task runs it (stored-candle feed, paper exchange, engine), the
paper exchange's included; inside the test's transaction the engine's atomic blocks are savepoints, which count too.
One account is measured with 5 active pairs and 2 open trades, then grown to 100 pairs and 20 open trades, in
four kinds of tick:
- steady state: lease held, reconciled a minute ago, nothing to open or close (every pair's newest signal holds);
- reconciling: the lease taken fresh (a restart), so every trade is compared with the exchange's positions;
- rotating: one trade closes on an exit signal and one opens on an entry signal (no reconciliation);
- funding: the first tick after a funding settlement, which the paper exchange settles on every position and the
  bot records per trade.
The market is built with bulk_create; the trades are opened by the engine (see tests/execution/bot_market.py).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from execution.bot import entries
from execution.models import FundingPayment, PairTrade
from tests.execution.bot_market import BotMarket

pytestmark = pytest.mark.django_db

# Query budgets (savepoints included). A change that adds queries to every tick shows against these; one that adds
# them per pair or per trade shows in the comparison of the two sizes. Rotate: 70 before the lease fence (issue
# #12), which renews the lease before each of the tick's four orders goes out and holds the lease row while the new
# trade and the two close orders are inserted (+7). Each notification writes its delivery rows in one more insert
# (issue #15): rotate closes one trade and opens another (+2).
# rotate: 4 market orders, each reading its fill bar and reference bar once (the fill model, pairs.market)
# The daily trade totals (issue #16): each write of a trade's state first reads the rows it touches (+4), and the
# closing recomputes its day's totals row (+6: lock, sums, intervals, write; +2 more when it is the day's first close,
# which creates the row in a savepoint); funding's bulk_update reads the trades' rows before and after (+2).
# The opening reads its pair's level twice more: when it is planned and right before its first leg (+2): a pair moved
# off the account's level mid-tick is not opened.
BUDGETS = {"steady": 7, "reconcile": 17, "rotate": 94, "funding": 26}
CREATES_ROW = {"rotate": 2}  # the small market's rotation closes the day's first trade, the large one's a later one


def counted_tick(market: BotMarket, now, **expect) -> tuple[int, list[str]]:
    with CaptureQueriesContext(connection) as queries:
        report = market.tick(now=now)
    assert report.status == "ok", report
    assert not report.mismatches, report
    for name, value in expect.items():
        assert getattr(report, name) == value, (name, report)
    return len(queries), [q["sql"] for q in queries.captured_queries]


def measure(market: BotMarket) -> dict[str, tuple[int, list[str]]]:
    """Each kind of tick once, in a row, on the market as it stands."""
    counts = {}
    market.next_bar()
    assert market.tick().reconciled  # an hour after the last one: reconciles and syncs funding
    counts["steady"] = counted_tick(market, market.now(60), reconciled=False, opened=0, closed=0)
    market.release_lease()
    counts["reconcile"] = counted_tick(market, market.now(120), reconciled=True, opened=0, closed=0)
    market.rotate(opens=1, closes=1)
    market.mark_reconciled(market.now())
    counts["rotate"] = counted_tick(market, market.now(90), reconciled=False, opened=1, closed=1)
    market.bars_to_settlement()
    market.mark_reconciled(market.now())
    paid = FundingPayment.objects.count()
    counts["funding"] = counted_tick(market, market.now(30), reconciled=False, opened=0, closed=0)
    assert FundingPayment.objects.count() == paid + len(market.traded) * 2  # both legs of every trade
    return counts


def test_tick_queries_do_not_grow_with_pairs_and_trades(monkeypatch):
    # The engine remembers per process which symbols it has set up on the exchange; start from none, so that
    # both rotations set up the symbols of the trade they open.
    monkeypatch.setattr(entries, "_prepared", set())
    market = BotMarket()
    market.grow(instruments=10, pairs=5, trades=2)
    small = measure(market)
    market.grow(instruments=60, pairs=95, trades=18)
    assert len(market.pairs) == 100 and len(market.traded) == 20
    large = measure(market)
    assert PairTrade.objects.filter(account=market.account, state=PairTrade.State.OPEN).count() == 20

    for kind, budget in BUDGETS.items():
        (n_small, _), (n_large, sql) = small[kind], large[kind]
        # Funding: the bot reads an hour of settlements again (late listings), which may name symbols of trades
        # closed since; the paper exchange then looks their instruments up: one query for all of them.
        slack = 1 if kind == "funding" else 0
        assert n_small - CREATES_ROW.get(kind, 0) <= n_large <= n_small + slack, (
            f"{kind} tick: {n_small} queries with 5 pairs, {n_large} with 100:\n" + "\n".join(sql)
        )
        assert n_large <= budget, f"{kind} tick: {n_large} queries, budget {budget}:\n" + "\n".join(sql)


def test_steady_tick_within_budget(django_assert_max_num_queries):
    market = BotMarket()
    market.grow(instruments=10, pairs=5, trades=2)
    market.next_bar()
    market.tick()
    market.mark_reconciled(market.now() + timedelta(seconds=30))
    with django_assert_max_num_queries(BUDGETS["steady"]):
        report = market.tick(now=market.now(60))
    assert report.status == "ok" and not report.reconciled and report.opened == report.closed == 0
