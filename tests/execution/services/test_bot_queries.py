"""A bot tick costs a constant number of queries, whatever the number of pairs and open trades (issue #5).

Counted: every query of the tick as the live task runs it (feed, paper exchange, engine), the paper exchange's
included. The same account is measured twice, first with 5 active pairs and 2 open trades, then grown to 100 pairs
and 20 open trades, in three kinds of tick:
- steady state: lease held, reconciled a minute ago, nothing to open or close (every pair's newest signal holds);
- reconciling: the lease taken fresh (a restart), so the tick compares every trade with the exchange's positions;
- both without a funding settlement in between (the market's clock stays between two settlements).
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from execution.models import PairTrade
from tests.execution.bot_market import BotMarket

pytestmark = pytest.mark.django_db

# Query budgets; a change that adds queries per tick shows here, one that adds them per pair or trade in the
# comparison of the two sizes.
STEADY_BUDGET = 16
RECONCILE_BUDGET = 24


def counted_tick(market: BotMarket, seconds: float) -> tuple[int, list[str]]:
    with CaptureQueriesContext(connection) as queries:
        report = market.tick(now=market.now(seconds))
    assert report.status == "ok", report
    assert report.opened == report.closed == 0 and not report.mismatches, report
    return len(queries), [q["sql"] for q in queries.captured_queries]


def measure(market: BotMarket) -> dict[str, int]:
    """Close a bar of holds, tick once (it reconciles and syncs funding), then count a steady tick a minute later
    and a reconciling tick on a fresh lease a minute after that."""
    market.next_bar()
    assert market.tick().reconciled
    steady, steady_sql = counted_tick(market, 60)
    market.release_lease()
    reconciling, reconcile_sql = counted_tick(market, 120)
    assert len(market.active_trades()) == len(market.traded)
    return {"steady": steady, "reconcile": reconciling, "steady_sql": steady_sql, "reconcile_sql": reconcile_sql}


def test_tick_queries_do_not_grow_with_pairs_and_trades():
    market = BotMarket()
    market.grow(instruments=10, pairs=5, trades=2)
    small = measure(market)
    market.grow(instruments=60, pairs=95, trades=18)
    assert len(market.pairs) == 100 and len(market.traded) == 20
    assert PairTrade.objects.filter(account=market.account, state=PairTrade.State.OPEN).count() == 20
    large = measure(market)

    assert large["steady"] == small["steady"], "\n".join(large["steady_sql"])
    assert large["reconcile"] == small["reconcile"], "\n".join(large["reconcile_sql"])
    assert small["steady"] <= STEADY_BUDGET, "\n".join(small["steady_sql"])
    assert small["reconcile"] <= RECONCILE_BUDGET, "\n".join(small["reconcile_sql"])


def test_steady_tick_within_budget(django_assert_max_num_queries):
    market = BotMarket()
    market.grow(instruments=10, pairs=5, trades=2)
    market.next_bar()
    market.tick()
    with django_assert_max_num_queries(STEADY_BUDGET):
        report = market.tick(now=market.now(60))
    assert report.status == "ok" and not report.reconciled
