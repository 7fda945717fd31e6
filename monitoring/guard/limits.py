"""The limits an account's book is held to: daily loss, drawdown from the equity peak, a losing streak, open trades
and gross exposure. Each breach says what fired, how far, and until when its latch holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from monitoring.guard.book import AccountBook
from risk.policy import Limits


@dataclass(frozen=True)
class Breach:
    """One check that fired on one account (``pair_id`` for a check about one pair trade)."""

    check: str
    account_id: int
    message: str
    until: datetime | None = None  # the latch's end; None: until a person clears it
    pair_id: int | None = None
    details: dict = field(default_factory=dict)


# How many times its limit a latched breach is (a daily loss of 2.5 % against a 1 % limit: 2.5): a trader who clears
# the halt lets the latch's period go on until the breach grows one more limit (``cycle._standing``).
MULTIPLE = "multiple_of_limit"


def _multiple(amount, limit) -> float | None:
    """``amount`` as a multiple of ``limit``; None for a limit of 0 (any loss is beyond it, and no multiple of it
    measures how far: a trader who clears such a halt lets the day go on)."""
    return float(amount / limit) if limit else None


def next_utc_midnight(now: datetime) -> datetime:
    return datetime.combine(now.astimezone(UTC).date() + timedelta(days=1), time.min, tzinfo=UTC)


def peak_equity(book: AccountBook) -> Decimal | None:
    """The highest equity seen since the last reset, this cycle's included, unless a held leg has no price: that
    equity is a guess (the leg at cost), and a peak raised by it would stay too high after the price came back, so
    the stored peak stands (None if none is stored yet)."""
    stored = book.state.peak_equity if book.state is not None else None
    if book.missing_marks:
        return stored
    return book.equity if stored is None else max(stored, book.equity)


def drawdown(book: AccountBook) -> float:
    peak = peak_equity(book)
    return float((peak - book.equity) / peak) if peak is not None and peak > 0 else 0.0


def limit_breaches(book: AccountBook, limits: Limits, *, now: datetime) -> list[Breach]:
    """Every limit ``book`` is beyond at ``now``."""
    account = book.account.pk
    breaches = []
    loss = -book.day_pnl
    if daily := _daily_loss_breach(book, limits, loss=loss, now=now):
        breaches.append(daily)
    dd = drawdown(book)
    if limits.max_drawdown_pct is not None and dd > limits.max_drawdown_pct:
        breaches.append(Breach("drawdown", account, f"drawdown {dd:.2%} from the peak {peak_equity(book):.2f} is "
                               f"beyond {limits.max_drawdown_pct:.2%}",
                               details={"drawdown": dd, "equity": str(book.equity)}))
    breaches += _streak_and_size_breaches(book, limits, now=now)
    return breaches


def _daily_loss_breach(book: AccountBook, limits: Limits, *, loss: Decimal, now: datetime) -> Breach | None:
    """Today's loss beyond the nearer of the two daily limits (the amount, the fraction of the day's start), measured
    in that one's units: a clear accepts a multiple of the limit that halted, and a later breach is held to it in
    the same units (its multiple of the other limit, farther away, let the day lose many more limits)."""
    day_start = book.day_start_equity
    amount = limits.daily_loss_limit
    by_pct = limits.daily_loss_limit_pct is not None and day_start > 0 and (
        amount is None or day_start * Decimal(repr(limits.daily_loss_limit_pct)) < amount)
    if by_pct:
        amount = day_start * Decimal(repr(limits.daily_loss_limit_pct))
    if amount is None or loss <= amount:
        return None
    if by_pct:
        return Breach("daily_loss", book.account.pk, f"daily loss {loss:.2f} ({float(loss / day_start):.2%} of "
                      f"{day_start:.2f}) is beyond {limits.daily_loss_limit_pct:.2%}", until=next_utc_midnight(now),
                      details={"day_pnl": str(book.day_pnl), "limit_pct": limits.daily_loss_limit_pct,
                               MULTIPLE: _multiple(float(loss / day_start), limits.daily_loss_limit_pct)})
    return Breach("daily_loss", book.account.pk, f"daily loss {loss:.2f} is beyond the limit {amount:.2f}",
                  until=next_utc_midnight(now), details={"day_pnl": str(book.day_pnl), "limit": str(amount),
                                                         MULTIPLE: _multiple(loss, amount)})


def _streak_and_size_breaches(book: AccountBook, limits: Limits, *, now: datetime) -> list[Breach]:
    account = book.account.pk
    breaches = []
    streak = limits.max_consecutive_losses
    if streak is not None and book.losing_streak >= streak and book.last_loss_at is not None:
        cooldown = limits.consecutive_losses_cooldown_minutes
        until = book.last_loss_at + timedelta(minutes=cooldown) if cooldown else None
        if until is None or until > now:
            breaches.append(Breach("consecutive_losses", account, f"{book.losing_streak} losing trades in a row "
                                   f"(limit {streak})", until=until,
                                   # A limit of 0 fires at the first loss; a clear then holds until one more.
                                   details={"streak": book.losing_streak,
                                            MULTIPLE: book.losing_streak / max(streak, 1)}))
    open_count = len([t for t in book.open_trades if t.trade.state != "planned"])
    if limits.max_open_trades is not None and open_count > limits.max_open_trades:
        breaches.append(Breach("open_trades", account, f"{open_count} open trades, above the limit "
                               f"{limits.max_open_trades}"))
    exposure = book.gross_exposure
    if limits.max_gross_exposure is not None and exposure > limits.max_gross_exposure:
        breaches.append(Breach("gross_exposure", account, f"gross exposure {exposure:.2f} is above the limit "
                               f"{limits.max_gross_exposure:.2f}", details={"exposure": str(exposure)}))
    return breaches
