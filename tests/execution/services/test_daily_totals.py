"""The daily trade totals stay equal to a rebuild from the trades through every kind of ORM write of a trade, on the
database (no mock): save, delete, QuerySet.update, bulk_update, bulk_create and QuerySet.delete."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from core.models import AuditEntry
from execution.daily_totals import FINAL_STATES
from execution.models import DailyTradeTotals, PairTrade
from execution.services.daily_totals import US_PER_DAY, _day_spans, daily_totals_rebuild
from tests.factories import ExchangeAccountFactory, PairFactory, PairTradeFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2021, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)
FIELDS = ("account_id", "day", "trades", "wins", "losses", "gross_profit", "gross_loss", "pnl", "fees", "funding",
          "held_us", "held_trades", "open_us", "open_spans")


def rows() -> list[tuple]:
    return [tuple(row) for row in DailyTradeTotals.objects.order_by("account_id", "day").values_list(*FIELDS)]


def assert_exact() -> list[tuple]:
    """The rows as the writes left them equal the rows rebuilt from the trades."""
    kept = rows()
    daily_totals_rebuild()
    assert rows() == kept
    return kept


def closed(account, opened_h, closed_h, pnl, **fields):
    return PairTradeFactory(account=account, pair=fields.pop("pair", None) or PairFactory(),
                            state=fields.pop("state", PairTrade.State.CLOSED), opened_at=T0 + opened_h * H,
                            closed_at=T0 + closed_h * H, realised_pnl=Decimal(pnl), **fields)


def test_final_states_are_the_models():
    assert set(FINAL_STATES) == set(PairTrade.FINAL_STATES)


def test_a_closing_sums_its_day_and_spans_every_day_it_was_open():
    account = ExchangeAccountFactory()
    closed(account, 20, 30, "-5", fees=Decimal("1.5"), funding=Decimal("-0.25"))  # over midnight
    closed(account, 2, 4, "7")
    day0, day1 = T0.date(), T0.date() + timedelta(days=1)
    by_day = {row.day: row for row in DailyTradeTotals.objects.filter(account=account)}
    assert set(by_day) == {day0, day1}
    assert (by_day[day0].trades, by_day[day0].pnl, by_day[day0].wins) == (1, Decimal("7"), 1)
    assert by_day[day0].open_spans == [[2 * 3_600_000_000, 4 * 3_600_000_000], [20 * 3_600_000_000, US_PER_DAY]]
    assert by_day[day0].open_us == 6 * 3_600_000_000
    row = by_day[day1]
    assert (row.trades, row.losses, row.gross_loss, row.pnl, row.fees, row.funding) == (
        1, 1, Decimal("-5"), Decimal("-5"), Decimal("1.5"), Decimal("-0.25"))
    assert (row.held_us, row.held_trades, row.open_spans) == (10 * 3_600_000_000, 1, [[0, 6 * 3_600_000_000]])
    assert_exact()


def test_every_kind_of_write_keeps_the_totals_exact():
    account, other = ExchangeAccountFactory(), ExchangeAccountFactory()
    open_trade = PairTradeFactory(account=account, state=PairTrade.State.OPEN, opened_at=T0 + 5 * H)
    assert rows() == []  # an open trade is in no total
    first = closed(account, 0, 12, "100")
    closed(account, 6, 30, "-50")
    assert_exact()

    # The bot closes a trade the way set_state does: one UPDATE through the queryset.
    PairTrade.objects.filter(pk=open_trade.pk).update(state=PairTrade.State.CLOSED, closed_at=T0 + 50 * H,
                                                      realised_pnl=Decimal("12.5"), fees=Decimal("1"))
    assert DailyTradeTotals.objects.filter(day=(T0 + 50 * H).date()).get().pnl == Decimal("12.5")
    assert_exact()

    # Its figures change (a late fee), then it moves to another day and another account (save).
    trade = PairTrade.objects.get(pk=open_trade.pk)
    trade.fees, trade.realised_pnl = Decimal("2"), Decimal("11.5")
    trade.save()
    trade.closed_at, trade.account = T0 + 80 * H, other
    trade.save()
    assert not DailyTradeTotals.objects.filter(day=(T0 + 50 * H).date(), trades__gt=0).exists()
    assert_exact()

    # Funding synced for several trades at once (bulk_update), trades created in bulk, then deleted.
    for t in (first, trade):
        t.funding = Decimal("-0.75")
    PairTrade.objects.bulk_update([first, trade], ["funding"])
    pair = PairFactory()
    PairTrade.objects.bulk_create([
        PairTrade(account=account, pair=pair, side="long_spread", state="unwound", hedge_ratio=1.0, y_qty=1, x_qty=1,
                  opened_at=T0 + (100 + i) * H, closed_at=T0 + (101 + i) * H, realised_pnl=Decimal(i - 2))
        for i in range(5)
    ])
    assert_exact()
    first.delete()
    PairTrade.objects.filter(account=account, state="unwound", realised_pnl__lt=0).delete()
    assert_exact()

    # A trade reopened by hand (back to open) leaves the totals.
    PairTrade.objects.filter(account=other).update(state=PairTrade.State.OPEN)
    assert not DailyTradeTotals.objects.filter(account=other).exists()
    assert_exact()


def test_a_non_final_update_costs_one_read_and_refreshes_nothing(django_assert_num_queries):
    trade = PairTradeFactory(state=PairTrade.State.OPENING)
    with django_assert_num_queries(2):  # the rows it touches as stored, then the UPDATE
        PairTrade.objects.filter(pk=trade.pk).update(state=PairTrade.State.OPEN, opened_at=T0)
    with django_assert_num_queries(1):  # no figure of the totals: a plain UPDATE
        PairTrade.objects.filter(pk=trade.pk).update(error="x")


def test_day_spans_merge_and_cut_at_midnight():
    first = date(2021, 3, 1)
    spans = _day_spans([(5, 10), (8, 12), (US_PER_DAY - 2, US_PER_DAY + 3), (-7, 1), (20, 20)], first, 2)
    assert spans == {first: [[0, 1], [5, 12], [US_PER_DAY - 2, US_PER_DAY]], first + timedelta(days=1): [[0, 3]]}


def test_rebuild_command_restores_the_rows_and_is_audited():
    account = ExchangeAccountFactory(name="desk")
    closed(account, 0, 12, "100")
    closed(ExchangeAccountFactory(), 0, 2, "3")
    kept = rows()
    DailyTradeTotals.objects.update(pnl=Decimal("0"), open_spans=[])  # as if written around the ORM
    call_command("rebuild_daily_totals", "--account", "desk")
    assert [r for r in rows() if r[0] == account.pk] == [r for r in kept if r[0] == account.pk]
    entry = AuditEntry.objects.get(action="rebuild_daily_totals")
    assert entry.channel == "command" and "desk" in entry.summary and "(manage.py rebuild_daily_totals)" in \
        entry.actor_label
    call_command("rebuild_daily_totals")
    assert rows() == kept


def test_rebuild_command_names_an_unknown_account_and_changes_nothing():
    ExchangeAccountFactory(name="desk")
    DailyTradeTotals.objects.all().delete()
    with pytest.raises(CommandError, match=r"--account nope: no such account \(accounts: desk\)"):
        call_command("rebuild_daily_totals", "--account", "nope")
    assert not AuditEntry.objects.filter(action="rebuild_daily_totals").exists()


def test_a_trade_built_in_memory_and_saved_leaves_its_old_day():
    account = ExchangeAccountFactory()
    stored = closed(account, 0, 2, "4")
    copy = PairTrade.objects.get(pk=stored.pk)
    copy.__dict__.pop("_stored_days")  # as if built from its fields, not read
    copy._state.adding = False
    copy.closed_at = T0 + 30 * H
    copy.save()
    assert [r[1] for r in rows()] == [T0.date(), T0.date() + timedelta(days=1)]
    assert DailyTradeTotals.objects.get(day=T0.date()).trades == 0  # only its open span is left that day
    assert_exact()


def test_a_save_of_other_fields_refreshes_nothing_and_a_deferred_read_reads_on_save(django_assert_num_queries):
    account = ExchangeAccountFactory()
    trade = PairTrade.objects.get(pk=closed(account, 0, 2, "4").pk)
    trade.error = "noted"
    with django_assert_num_queries(1):  # the UPDATE alone
        trade.save(update_fields=["error", "updated_at"])
    partial = PairTrade.objects.only("pk", "realised_pnl").get(pk=trade.pk)
    assert not hasattr(partial, "_stored_days")
    partial.realised_pnl = Decimal("-1")
    partial.save(update_fields=["realised_pnl"])
    assert DailyTradeTotals.objects.get(account=account).pnl == Decimal("-1")
    assert_exact()


def test_a_write_of_its_own_kind_keeps_the_totals_exact():
    """``update_keeping_totals``: the bot's fenced writes of a trade (their own UPDATE) refresh the days the trade
    was and is in, with plain values and with an expression (read back after the write)."""
    from django.db.models import F

    from execution.daily_totals import update_keeping_totals

    account = ExchangeAccountFactory()
    trade = closed(account, 2, 30, "5")
    other = closed(account, 3, 4, "-1")
    assert_exact()
    moved = {"closed_at": T0 + 60 * H, "realised_pnl": Decimal("7.5")}

    def write_plain() -> int:
        return PairTrade._base_manager.filter(pk=trade.pk).update(**moved)  # the base manager refreshes nothing

    assert update_keeping_totals(trade.pk, moved, write_plain) == 1
    assert {row[1] for row in assert_exact()} == {date(2021, 3, 1), date(2021, 3, 2), date(2021, 3, 3)}
    shifted = {"closed_at": F("closed_at") - timedelta(days=2)}

    def write_expression() -> int:
        return PairTrade._base_manager.filter(pk=trade.pk).update(**shifted)

    assert update_keeping_totals(trade.pk, shifted, write_expression) == 1
    assert {row[1] for row in assert_exact()} == {date(2021, 3, 1)}
    assert update_keeping_totals(other.pk, {"state": PairTrade.State.CLOSED}, lambda: 0) == 0  # a lost lease
