"""One guard cycle: measure every account, hold it to its limits, run the detectors, act, write the day's snapshot.

Live it runs every minute (beat) and after every trade close; a replay runs it at every bar with its own clock and
market view, so the same code decides the same halts in both. A fixed number of queries however many accounts and
open trades; writes only when something fires, plus one upsert of the snapshots and one of the guard states.

Actions (``risk.policy``): notify records a guard event and tells people; pause_pair stops new entries of one pair;
reduce stops new entries of the account; halt stops entries and signal exits; halt_flatten also closes every open
trade through the trade state machine (both legs, reduce-only). Daily limits latch until the next UTC midnight, a
losing streak for its cooldown, the guard's own blindness (an exchange it can't read, a held leg without a price)
for BLIND_LATCH at a time while it lasts, everything else until a person with the trader role clears it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from core.audit import audit_record
from exchanges.base import TradingExchange
from execution.locks import lock_accounts
from execution.models import ExchangeAccount
from monitoring.guard import detectors
from monitoring.guard.book import AccountBook, account_books, day_start
from monitoring.guard.exchange_reads import exchange_checks, exchange_read, mark_at_exchange
from monitoring.guard.limits import MULTIPLE, Breach, limit_breaches, peak_equity
from notifications.models import Notification
from notifications.services import notify
from pairs.market import MarketView
from pairs.models import Pair
from risk.models import AccountGuardState, DailyPnlSnapshot, GuardEvent, Halt
from risk.policy import HALT, HALT_FLATTEN, NOTIFY, PAUSE_PAIR, REDUCE, Limits
from risk.selectors import account_state, halts_in_force, limits_by_account
from risk.services import expired_halts_clear, guard_event_record, halt_raise

logger = logging.getLogger(__name__)

# A notify-only check that keeps firing is recorded (and told) once per this much of the guard's clock.
NOTIFY_EVERY = timedelta(hours=1)
LABELS = {
    "daily_loss": "daily loss limit", "drawdown": "maximum drawdown", "consecutive_losses": "losing streak",
    "open_trades": "open trades limit", "gross_exposure": "gross exposure limit", "stale_data": "stale market data",
    "heartbeat": "bot heartbeat", "position_mismatch": "positions differ from the exchange",
    "one_leg": "one-legged trade", "leg_imbalance": "leg imbalance", "error_burst": "burst of errors",
    "slippage": "fill slippage", "balance": "unexplained balance change", "queue": "Celery queue",
    "exchange_unreadable": "exchange not readable by the guard", "missing_marks": "held leg without a price",
}
# The guard's own blindness: it can't tell whether a limit is crossed, so it fails closed (no new entries). These
# checks are not in risk.policy's DEFAULT_ACTIONS, so an account's actions can't loosen them; if the policy ever
# lists them, its (configurable) action is used.
BLIND_CHECKS = {"exchange_unreadable": REDUCE, "missing_marks": REDUCE}
# Their halts lift themselves: each holds this long and is raised again while the guard still can't see, so a
# passing blip doesn't stop an account's entries until a person notices, and an outage keeps them stopped.
BLIND_LATCH = timedelta(minutes=15)
# Limits that fire on reaching their value (a losing streak of N at a limit of N), not on going past it (a loss).
REACHED_CHECKS = frozenset({"consecutive_losses"})


@dataclass
class GuardReport:
    at: datetime
    accounts: int = 0
    breaches: list[Breach] = field(default_factory=list)
    halts_raised: list[Halt] = field(default_factory=list)
    halts_expired: list[Halt] = field(default_factory=list)
    events: list[GuardEvent] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)  # account name -> active / reducing / halted


def guard_run(
    *, now: datetime, market: MarketView, accounts: list[ExchangeAccount] | None = None, live: bool = True,
    exchange_for: Callable[[ExchangeAccount], TradingExchange] | None = None,
    queue_lengths: dict[str, int] | None = None, process_now: datetime | None = None,
) -> GuardReport:
    """One cycle at ``now`` over ``accounts`` (default: every enabled one), pricing from ``market``. ``live`` False
    (a replay) skips the checks about processes (heartbeats); ``exchange_for`` gives a demo or real account's
    exchange for the balance and position checks and the marks of its legs (the exchange's mark prices, fresher than
    the hourly closes); ``queue_lengths`` the Celery queues' lengths. ``process_now`` is
    the processes' own time, which the heartbeats are written in (default ``now``): the wall clock, which is not the
    market's time on the demo's stored-data clock."""
    report = GuardReport(at=now)
    report.halts_expired = expired_halts_clear(now=now)
    if accounts is None:
        accounts = list(ExchangeAccount.objects.filter(enabled=True).order_by("pk"))
    if not accounts:
        return report
    report.accounts = len(accounts)
    limits = limits_by_account([a.pk for a in accounts])
    books = account_books(accounts, now=now, market=market)
    # Demo and real accounts: read before anything is measured, so that their legs are marked at the exchange's
    # prices of this minute, not at the last hourly close.
    readings = exchange_read(books, exchange_for) if exchange_for is not None else {}
    mark_at_exchange(books, readings)
    since = min((b.state.checked_at for b in books.values() if b.state and b.state.checked_at), default=None)
    breaches = _breaches(books, limits, now=now, live=live, timeframe=market.timeframe,
                         since=since or now - NOTIFY_EVERY, process_now=process_now or now)
    found, exchange_equity = exchange_checks(books, limits, readings, now=now)
    breaches += found
    breaches += detectors.queue_lengths(queue_lengths or {}, limits[0].queue_max_length)
    breaches = [replace(b, until=now + BLIND_LATCH) if b.check in BLIND_CHECKS and b.until is None else b
                for b in breaches]
    report.breaches = breaches
    # No savepoint: inside a caller's transaction (a replay's bar) an error here ends the caller's transaction anyway.
    with transaction.atomic(savepoint=False):
        _act(report, breaches, books, limits, now=now)
        halts = halts_in_force(now=now, account_ids=list(books))
        for account_id, book in books.items():
            state = account_state([h for h in halts if h.account_id in (None, account_id)])
            report.states[book.account.name] = state
            _remember(book, state, now=now, exchange_equity=exchange_equity.get(account_id),
                      scheduled_at=(process_now or timezone.now()) if live else None)
        _write_states(books, live=live)
        snapshots_write(books, now=now)
    return report


def _breaches(books: dict[int, AccountBook], limits: dict[int, Limits], *, now: datetime, live: bool,
              timeframe: str, since: datetime, process_now: datetime) -> list[Breach]:
    found: list[Breach] = []
    for account_id, book in books.items():
        found += limit_breaches(book, limits[account_id], now=now)
    found += detectors.stale_data(books, limits, now=now, timeframe=timeframe)
    found += detectors.leg_problems(books, limits, now=now)
    found += detectors.error_bursts(books, limits, now=now, process_now=process_now)
    found += detectors.slippage(books, limits, now=now, since=since)
    found += detectors.missing_marks(books)
    if live:
        found += detectors.stale_heartbeats(books, limits, now=process_now)
    return found


def _act(report: GuardReport, breaches: list[Breach], books: dict[int, AccountBook], limits: dict[int, Limits], *,
         now: datetime) -> None:
    """Apply each breach's action once: a halt already standing (or, for a daily limit, cleared by a person today)
    is not raised again; a notify-only check is recorded once per NOTIFY_EVERY."""
    if not breaches:
        return
    ids = [a for a in books]
    # Before reading what stands: another cycle acting on these accounts at the same moment has committed (its
    # halts are read below) or waits for this one.
    lock_accounts(ids)
    guard_halts = list(Halt.objects.filter(Q(account_id__in=ids) | Q(account__isnull=True), source=Halt.Source.GUARD)
                       .filter(Q(cleared_at__isnull=True, until__isnull=True) |
                               Q(cleared_at__isnull=True, until__gt=now) | Q(cleared_at__gte=day_start(now))))
    recent = set(GuardEvent.objects.filter(created_at__gt=now - NOTIFY_EVERY, created_at__lte=now,
                                           kind__in=[b.check for b in breaches])
                 .values_list("account_id", "kind", "details__pair", "details__order"))
    for breach in breaches:
        account = books[breach.account_id].account if breach.account_id else None
        action = _action(limits[breach.account_id], breach.check)
        if action == PAUSE_PAIR and breach.pair_id is None:
            action = NOTIFY
        if action == NOTIFY:
            # The same breach again within the hour is muted; another order's slippage is another breach.
            order = breach.details.get("order")
            key = (account.pk if account else None, breach.check, breach.pair_id, order)
            if key not in recent:
                recent.add(key)
                report.events.append(_record(breach, account, now=now, severity=GuardEvent.Severity.WARNING))
                notify(topic=f"guard_{breach.check}", severity=Notification.Severity.WARNING,
                       text=_text(breach, account),
                       dedupe_key=f"guard:{breach.check}:{key[0]}:{breach.pair_id}:{order or ''}:{now:%Y%m%d%H}")
            continue
        # Only pause_pair stops one pair; reduce and halt are the account's states, whatever check fired them.
        pair_id = breach.pair_id if action == PAUSE_PAIR else None
        if _standing(guard_halts, breach, account, pair_id=pair_id, now=now):
            continue
        halt = halt_raise(account=account, source=Halt.Source.GUARD, reason=f"{LABELS[breach.check]}: "
                          f"{breach.message}", mode=Halt.Mode.HALT if action in (HALT, HALT_FLATTEN) else
                          Halt.Mode.REDUCE, flatten=action == HALT_FLATTEN, trigger=breach.check, until=breach.until,
                          pair=_pair(pair_id), now=now, breach_multiple=breach.details.get(MULTIPLE))
        guard_halts.append(halt)
        report.halts_raised.append(halt)
        audit_record(action="raise_halt", channel="system", actor_label="guard", target=halt,
                     summary=f"{halt.mode} of {account.name if account else 'all accounts'}: {halt.reason}",
                     details={"check": breach.check, **breach.details})
        report.events.append(_record(breach, account, now=now, severity=GuardEvent.Severity.CRITICAL))


def _action(limits: Limits, check: str) -> str:
    if check in BLIND_CHECKS and check not in limits.actions:
        return BLIND_CHECKS[check]
    return limits.action(check)


def _standing(halts: list[Halt], breach: Breach, account: ExchangeAccount | None, *, pair_id: int | None,
              now: datetime) -> bool:
    """Is a halt for ``breach`` already standing, or let go of by a person? A latched limit a person cleared today
    (before its latch ended) is not raised again for the same breach: the trader looked and let it trade. But a
    clear is not a licence for any loss: the trader accepted the breach as it stood when the halt was raised, and
    one more limit beyond that (a daily loss of 1.3 % against a 1 % limit, cleared: halted again past 2.3 %) raises
    it again."""
    account_id = account.pk if account else None
    matching = [h for h in halts
                if h.account_id == account_id and h.trigger == breach.check and h.pair_id == pair_id]
    if any(h.cleared_at is None for h in matching):
        return True
    let_go = [h for h in matching if _let_go(h, breach, now=now)]
    if not let_go:
        return False
    multiple = breach.details.get(MULTIPLE)
    accepted = max(let_go, key=lambda h: h.created_at).breach_multiple  # the latest clear's
    if multiple is None or accepted is None:
        return True
    if breach.check in REACHED_CHECKS:
        # A count fires on reaching its limit, so it fires again on reaching one more (1e-9: the float quotients).
        return multiple < accepted + 1 - 1e-9
    return multiple <= accepted + 1


def _let_go(halt: Halt, breach: Breach, *, now: datetime) -> bool:
    """Did a person clear ``halt`` (of ``breach``'s check) in a way that lets ``breach`` trade on? Only a latched
    breach, or one measured against its limit (a losing streak "until cleared" stands until a win, which can't come
    while no trade opens: without this its clear could never hold), cleared before its latch ended (an expiry is no
    one's decision). The guard's own blindness is let go for the latch a person cleared, not for the day: a later
    outage stops the entries again."""
    if breach.until is None and MULTIPLE not in breach.details:
        return False
    if halt.until is None:
        return True
    return halt.cleared_at < halt.until and (breach.check not in BLIND_CHECKS or now < halt.until)


def _pair(pair_id: int | None):
    return None if pair_id is None else Pair.objects.filter(pk=pair_id).first()


def _record(breach: Breach, account: ExchangeAccount | None, *, now: datetime, severity: str) -> GuardEvent:
    return guard_event_record(account=account, kind=breach.check, severity=severity, message=breach.message,
                              details={**breach.details, "pair": breach.pair_id}, at=now)


def _text(breach: Breach, account: ExchangeAccount | None) -> str:
    return f"[{account.name if account else 'all accounts'}] {LABELS[breach.check]}: {breach.message}"


def _remember(book: AccountBook, state: str, *, now: datetime, exchange_equity, scheduled_at: datetime | None
              ) -> None:
    guard_state = book.state or AccountGuardState(account=book.account)
    guard_state.state = state
    guard_state.peak_equity = peak_equity(book)
    # The balance check compares the exchange's change with the book's between the same two cycles, so the two
    # baselines move together: a cycle that did not read the exchange (it failed, or a cycle after a trade closed,
    # which does not read it) leaves both, or the exchange's change over the gap would be held against the book's
    # over one cycle. A paper account has no exchange side: its equity alone is remembered.
    if exchange_equity is not None or book.account.mode == ExchangeAccount.Mode.PAPER:
        guard_state.equity = book.equity
    if exchange_equity is not None:
        guard_state.exchange_equity = exchange_equity
    guard_state.checked_at = now
    if scheduled_at is not None:  # a live cycle: the bots read it to know the guard is running
        guard_state.live_checked_at = scheduled_at
    book.state = guard_state


def _write_states(books: dict[int, AccountBook], *, live: bool) -> None:
    states = [b.state for b in sorted(books.values(), key=lambda b: b.account.pk) if b.state is not None]
    # Only a scheduled cycle writes its stamp: a bot's or a replay's would write back the one it read, over a newer
    # one a scheduled cycle committed in between.
    _upsert(AccountGuardState, states, unique=["account"],
            update=["state", "peak_equity", "equity", "exchange_equity", "checked_at"]
            + (["live_checked_at"] if live else []))


def snapshots_write(books: dict[int, AccountBook], *, now: datetime) -> None:
    """Today's (UTC) snapshot of each account, rewritten every cycle; the day's start stays what it was."""
    today = now.date()
    rows = []
    # In the accounts' primary-key order: each row's foreign key check share-locks its account row, and a guard cycle
    # holds its accounts' rows in that order (execution.locks.lock_accounts): the same order never deadlocks.
    for book in sorted(books.values(), key=lambda b: b.account.pk):
        equity = book.equity
        # The history's peak: every earlier day's, the day's start, what the guard saw, and now. (While a held leg
        # has no price, now is a guess that the guard's own peak ignores, limits.peak_equity; the record's peak
        # still can't be below its ending equity, a constraint of the table.)
        peak = max(x for x in (book.previous_peak, book.day_start_equity, peak_equity(book), equity)
                   if x is not None)
        rows.append(DailyPnlSnapshot(
            account=book.account, date=today, starting_equity=book.day_start_equity, ending_equity=equity,
            realised_pnl=book.day_realised, unrealised_pnl=book.unrealised, fees=book.day_fees,
            funding=book.day_funding, trades_opened=book.day_opened, trades_closed=book.day_closed,
            peak_equity=peak, drawdown=float((peak - equity) / peak) if peak > 0 else 0.0,
        ))
    _upsert(DailyPnlSnapshot, rows, unique=["account", "date"],
            update=["ending_equity", "realised_pnl", "unrealised_pnl", "fees", "funding", "trades_opened",
                    "trades_closed", "peak_equity", "drawdown", "updated_at"])


def _upsert(model, rows: list, *, unique: list[str], update: list[str]) -> None:
    if not rows:
        return
    # MySQL and MariaDB find the conflicting row by any unique key themselves and take no target.
    target = unique if connection.features.supports_update_conflicts_with_target else None
    model.objects.bulk_create(rows, update_conflicts=True, unique_fields=target, update_fields=update)
