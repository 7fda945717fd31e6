"""Daily PnL snapshots, halts."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from execution.models import PairTrade
from monitoring.services import daily_pnl_snapshot_update, daily_pnl_snapshots_update
from risk.models import DailyPnlSnapshot, Halt
from risk.services import halt_raise, halts_clear
from tests.factories import (
    DailyPnlSnapshotFactory,
    ExchangeAccountFactory,
    HaltFactory,
    PairFactory,
    PairTradeFactory,
)

pytestmark = pytest.mark.django_db

DAY = date(2021, 3, 2)
MIDNIGHT = datetime(2021, 3, 2, tzinfo=UTC)
NEXT_MIDNIGHT = datetime(2021, 3, 3, tzinfo=UTC)


def _closed(account, closed_at, pnl, fees="0", funding="0", state=PairTrade.State.CLOSED, opened_at=None):
    return PairTradeFactory(
        account=account,
        state=state,
        opened_at=opened_at or closed_at - timedelta(hours=5),
        closed_at=closed_at,
        realised_pnl=None if pnl is None else Decimal(pnl),
        fees=Decimal(fees),
        funding=Decimal(funding),
    )


@pytest.fixture
def account():
    return ExchangeAccountFactory(name="bybit-paper", capital=Decimal("10000"))


def test_first_day_starts_from_capital_plus_earlier_results_and_counts_only_that_utc_day(account):
    before = MIDNIGHT - timedelta(hours=2)
    # Closed just before the day, at its first instant, during it, at its last instant, at the next midnight.
    _closed(account, MIDNIGHT - timedelta(microseconds=1), "1000", fees="10", funding="1", opened_at=before)
    _closed(account, MIDNIGHT, "100", fees="1.5", funding="0.25", opened_at=before)
    _closed(account, MIDNIGHT + timedelta(hours=12), "-30", fees="2", funding="-0.75", opened_at=MIDNIGHT)
    _closed(account, NEXT_MIDNIGHT - timedelta(microseconds=1), "5.5", fees="0.5", opened_at=before)
    _closed(account, NEXT_MIDNIGHT, "2000", fees="20", funding="2", opened_at=MIDNIGHT + timedelta(hours=20))
    # An unwound trade that lost on its lone leg counts; one that failed with no fill (no result) and a trade of
    # another account don't.
    _closed(account, MIDNIGHT + timedelta(hours=3), "-40", state=PairTrade.State.UNWOUND, opened_at=before)
    _closed(account, MIDNIGHT + timedelta(hours=4), None, state=PairTrade.State.FAILED, opened_at=before)
    _closed(ExchangeAccountFactory(), MIDNIGHT + timedelta(hours=3), "-700", opened_at=MIDNIGHT)

    snapshot = daily_pnl_snapshot_update(account=account, day=DAY)

    assert snapshot.date == DAY
    # No earlier snapshot: the capital plus what finished before the day (the 1000 closed a microsecond before).
    assert snapshot.starting_equity == Decimal("11000")
    assert snapshot.realised_pnl == Decimal("35.5")  # 100 - 30 + 5.5 - 40
    assert snapshot.fees == Decimal("4")  # 1.5 + 2 + 0.5
    assert snapshot.funding == Decimal("-0.5")  # 0.25 - 0.75 + 0
    assert snapshot.ending_equity == Decimal("11035.5")
    assert snapshot.peak_equity == Decimal("11035.5")
    assert snapshot.trades_closed == 4
    # Opened during the day (of this account): at 00:00 and at 20:00.
    assert snapshot.trades_opened == 2
    stored = DailyPnlSnapshot.objects.get(account=account, date=DAY)
    assert (stored.starting_equity, stored.ending_equity, stored.realised_pnl) == (
        Decimal("11000"), Decimal("11035.5"), Decimal("35.5"),
    )


def test_later_days_start_from_the_previous_snapshot_and_track_the_peak(account):
    _closed(account, datetime(2021, 3, 1, 10, tzinfo=UTC), "200")
    _closed(account, datetime(2021, 3, 2, 10, tzinfo=UTC), "-350")
    _closed(account, datetime(2021, 3, 4, 10, tzinfo=UTC), "400")

    first = daily_pnl_snapshot_update(account=account, day=date(2021, 3, 1))
    second = daily_pnl_snapshot_update(account=account, day=date(2021, 3, 2))
    # No snapshot for the 3rd: the 4th starts from the latest earlier one, the 2nd.
    fourth = daily_pnl_snapshot_update(account=account, day=date(2021, 3, 4))

    assert (first.starting_equity, first.ending_equity, first.peak_equity) == (
        Decimal("10000"), Decimal("10200"), Decimal("10200"),
    )
    assert (second.starting_equity, second.ending_equity, second.peak_equity) == (
        Decimal("10200"), Decimal("9850"), Decimal("10200"),
    )
    assert (fourth.starting_equity, fourth.ending_equity, fourth.peak_equity) == (
        Decimal("9850"), Decimal("10250"), Decimal("10250"),
    )


def test_first_day_with_a_loss_keeps_capital_as_the_peak(account):
    _closed(account, MIDNIGHT + timedelta(hours=1), "-120")
    snapshot = daily_pnl_snapshot_update(account=account, day=DAY)
    assert (snapshot.ending_equity, snapshot.peak_equity) == (Decimal("9880"), Decimal("10000"))


def test_day_without_trades_carries_equity_forward(account):
    _closed(account, MIDNIGHT - timedelta(hours=3), "-100")
    DailyPnlSnapshotFactory(
        account=account, date=DAY - timedelta(days=1), starting_equity=Decimal("10000"),
        ending_equity=Decimal("9900"), peak_equity=Decimal("10100"),
    )
    snapshot = daily_pnl_snapshot_update(account=account, day=DAY)
    assert (snapshot.starting_equity, snapshot.ending_equity, snapshot.peak_equity) == (
        Decimal("9900"), Decimal("9900"), Decimal("10100"),
    )
    assert (snapshot.realised_pnl, snapshot.fees, snapshot.funding, snapshot.trades_closed) == (0, 0, 0, 0)


def test_running_twice_gives_the_same_single_row(account):
    _closed(account, MIDNIGHT + timedelta(hours=6), "42.125", fees="1.125", funding="0.5")

    first = daily_pnl_snapshot_update(account=account, day=DAY)
    second = daily_pnl_snapshot_update(account=account, day=DAY)

    assert DailyPnlSnapshot.objects.filter(account=account).count() == 1
    assert first.pk == second.pk
    stored = DailyPnlSnapshot.objects.get(account=account, date=DAY)
    assert (stored.starting_equity, stored.ending_equity, stored.peak_equity) == (
        Decimal("10000"), Decimal("10042.125"), Decimal("10042.125"),
    )
    assert (stored.realised_pnl, stored.fees, stored.funding, stored.trades_closed) == (
        Decimal("42.125"), Decimal("1.125"), Decimal("0.5"), 1,
    )


def test_rerun_picks_up_a_trade_closed_since(account):
    _closed(account, MIDNIGHT + timedelta(hours=1), "10")
    daily_pnl_snapshot_update(account=account, day=DAY)
    _closed(account, MIDNIGHT + timedelta(hours=20), "15")

    snapshot = daily_pnl_snapshot_update(account=account, day=DAY)

    assert DailyPnlSnapshot.objects.filter(account=account, date=DAY).count() == 1
    assert (snapshot.realised_pnl, snapshot.ending_equity, snapshot.trades_closed) == (
        Decimal("25"), Decimal("10025"), 2,
    )


def test_all_enabled_accounts_are_snapshotted(account):
    disabled = ExchangeAccountFactory(enabled=False)
    other = ExchangeAccountFactory(capital=Decimal("500"))
    assert daily_pnl_snapshots_update(day=DAY) == 2
    assert set(DailyPnlSnapshot.objects.values_list("account_id", flat=True)) == {account.pk, other.pk}
    assert not DailyPnlSnapshot.objects.filter(account=disabled).exists()


# --- halts ----------------------------------------------------------------------------------------------------


def test_halt_raise_reuses_an_identical_active_halt(account):
    first = halt_raise(account=account, source=Halt.Source.GUARD, reason="daily loss limit reached")
    again = halt_raise(account=account, source=Halt.Source.GUARD, reason="daily loss limit reached", flatten=True)

    assert again.pk == first.pk
    assert Halt.objects.count() == 1
    assert Halt.objects.get(pk=first.pk).flatten is True  # a later request to flatten is kept


def test_halt_raise_creates_a_new_halt_when_anything_differs(account, django_user_model):
    user = django_user_model.objects.create_user(username="ops", password="a-long-test-password")
    base = halt_raise(account=account, source=Halt.Source.GUARD, reason="daily loss")
    other_reason = halt_raise(account=account, source=Halt.Source.GUARD, reason="drawdown")
    other_source = halt_raise(account=account, source=Halt.Source.MANUAL, reason="daily loss", created_by=user)
    global_halt = halt_raise(account=None, source=Halt.Source.GUARD, reason="daily loss")
    global_again = halt_raise(account=None, source=Halt.Source.GUARD, reason="daily loss")

    assert len({base.pk, other_reason.pk, other_source.pk, global_halt.pk}) == 4
    assert global_again.pk == global_halt.pk
    assert Halt.objects.count() == 4
    assert Halt.objects.get(pk=other_source.pk).created_by == user
    assert Halt.objects.get(pk=global_halt.pk).account is None


def test_halt_raise_after_clearing_creates_a_new_one(account):
    first = halt_raise(account=account, source=Halt.Source.BOT, reason="reconciliation failed")
    halts_clear(halts=Halt.objects.filter(pk=first.pk), cleared_by=None)

    second = halt_raise(account=account, source=Halt.Source.BOT, reason="reconciliation failed")

    assert second.pk != first.pk
    assert second.is_active and not Halt.objects.get(pk=first.pk).is_active


def test_halts_clear_clears_only_active_ones(account, django_user_model):
    user = django_user_model.objects.create_user(username="ops", password="a-long-test-password")
    active = HaltFactory(account=account)
    other = HaltFactory(reason="another")
    old_time = datetime(2021, 1, 1, tzinfo=UTC)
    already = HaltFactory(reason="old", cleared_at=old_time)

    assert halts_clear(halts=Halt.objects.all(), cleared_by=user) == 2

    for halt in (active, other):
        halt.refresh_from_db()
        assert halt.cleared_at is not None
        assert halt.cleared_by == user
        assert not halt.is_active
    already.refresh_from_db()
    assert already.cleared_at == old_time
    assert already.cleared_by is None
    assert halts_clear(halts=Halt.objects.all(), cleared_by=user) == 0


def test_a_capital_change_before_the_days_first_cycle_starts_the_day_from_yesterdays_end_moved_by_it():
    from risk.services import guard_baselines_move_with_capital

    yesterday = DailyPnlSnapshotFactory(date=DAY - timedelta(days=1), ending_equity=Decimal("10050"),
                                        peak_equity=Decimal("10100"))
    guard_baselines_move_with_capital(account=yesterday.account, delta=Decimal("2000"), today=DAY)
    today = DailyPnlSnapshot.objects.get(account=yesterday.account, date=DAY)
    assert (today.starting_equity, today.ending_equity, today.peak_equity) == (12050, 12050, 12100)
    yesterday.refresh_from_db()
    assert (yesterday.ending_equity, yesterday.peak_equity) == (10050, 10100)  # history stays as it was


def test_a_halt_reads_as_what_it_stops_its_mode_and_pair():
    """Telegram's /status and /resume list halts by their text: "halt of lvl1" for a pair's reduce-only pause read
    as the whole account stopped."""
    account = ExchangeAccountFactory(name="lvl1")
    pair = PairFactory(y_instrument__symbol="AAAUSDT", x_instrument__symbol="BBBUSDT")

    paused = HaltFactory(account=account, pair=pair, mode=Halt.Mode.REDUCE, reason="slippage")
    stopped = HaltFactory(account=None, mode=Halt.Mode.HALT, flatten=True, reason="kill switch")

    assert str(paused) == f"pair AAAUSDT/BBBUSDT of {account} reduce-only: slippage"
    assert str(stopped) == "all accounts halted and flattening: kill switch"


def test_a_user_who_raised_a_halt_or_moved_a_level_cant_be_deleted_so_the_history_keeps_who_it_was(
        django_user_model):
    """Deleting the user set these to NULL: a person's manual level change then read 'system' in the level history."""
    from django.db.models import ProtectedError

    from pairs.models import LevelChange

    officer = django_user_model.objects.create_user(username="officer", password="a-long-test-password")
    halt = HaltFactory(account=None, created_by=officer)
    with pytest.raises(ProtectedError):
        officer.delete()
    halt.delete()
    pair = PairFactory()
    LevelChange.objects.create(pair=pair, from_level=None, to_level=pair.level, reason="by hand", changed_by=officer,
                               automatic=False)
    with pytest.raises(ProtectedError):
        officer.delete()
    officer.is_active = False  # what the admin does instead: the login goes, the history stays
    officer.save()
    assert LevelChange.objects.get().actor == "officer"
