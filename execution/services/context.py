"""What a bot tick trades with: the account, its exchange, the tick's time, the market and a few knobs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Exists
from django.utils import timezone

from core.row_updates import row_update
from exchanges.base import TradingExchange
from execution.daily_totals import update_keeping_totals
from execution.locks import lock_lease
from execution.models import BotHeartbeat, ExchangeAccount, PairTrade
from pairs.market import MarketView
from pairs.models import Instrument, StrategyConfig

# Renew the bot's lease (2 minutes) when a tick has run this long.
LEASE_RENEW_AFTER_S = 30.0
LEASE_TTL = timedelta(seconds=120)


class TickAborted(Exception):
    """The exchange could not be reached to resolve an order; nothing more is decided this tick."""


class LeaseLost(TickAborted):
    """Another worker holds the account's lease now (this one stalled past it): this worker stops at once and
    writes nothing more."""


@dataclass(frozen=True)
class Fence:
    """The lease generation a tick holds (``execution.bot.lease``): every state write and every order send of the
    tick checks it, in the same statement as the write, so a worker that lost the lease writes nothing."""

    account_id: int
    owner: str
    generation: int

    def _held(self) -> Exists:
        # Uncorrelated: "the account's lease is still at my generation", judged in the statement that writes.
        return Exists(BotHeartbeat.objects.filter(account_id=self.account_id, lease_generation=self.generation))

    def update_row(self, instance, attnames: list[str]) -> None:
        """Write ``attnames`` of ``instance``'s row from the instance only while the lease is at this generation,
        in one statement built once (``core.row_updates``); LeaseLost otherwise. A trade's write that moves its
        daily totals refreshes them, as ``PairTrade.objects.update`` does."""
        def write() -> int:
            count = row_update(instance, attnames, exists=(BotHeartbeat, {"account_id": self.account_id,
                                                                          "lease_generation": self.generation}))
            if count is None:  # not one the statement can write: the ORM's update, fenced the same way
                values = {attname: getattr(instance, attname) for attname in attnames}
                count = type(instance)._base_manager.filter(pk=instance.pk).filter(self._held()).update(**values)
            return count

        if isinstance(instance, PairTrade):
            count = update_keeping_totals(instance.pk, {a: getattr(instance, a) for a in attnames}, write)
        else:
            count = write()
        if not count and not self.holds():
            raise LeaseLost(f"lease generation {self.generation} was replaced: not writing")

    def holds(self) -> bool:
        return BotHeartbeat.objects.filter(account_id=self.account_id, lease_generation=self.generation).exists()

    def lock(self) -> None:
        """Inside a transaction: hold the lease row until the end of it, or LeaseLost (for inserts, which can't
        carry the condition themselves)."""
        if not lock_lease(self.account_id, self.generation):
            raise LeaseLost(f"lease generation {self.generation} was replaced: not writing")

    def renew(self, ttl: timedelta = LEASE_TTL) -> None:
        """Extend the lease (right before an order goes out, and during a long tick); LeaseLost if it was replaced.
        An expired lease that nobody took over is still this worker's: its generation is unchanged."""
        if not BotHeartbeat.objects.filter(account_id=self.account_id, lease_generation=self.generation).update(
            lease_expires_at=timezone.now() + ttl
        ):
            raise LeaseLost(f"lease generation {self.generation} was replaced: stopping")


def _no_checkpoint(step: str) -> None:
    return None


@dataclass
class TradingContext:
    """What a tick trades with: the account, its exchange (wrapped once in ``RetryingExchange``), the tick's time
    (``now``, read once from the clock), the market view and a few knobs. Tests inject faults through
    ``checkpoint`` (called between every two steps of opening and closing) and the exchange."""

    account: ExchangeAccount
    exchange: TradingExchange
    now: datetime
    config: StrategyConfig
    market: MarketView | None = None
    checkpoint: Callable[[str], None] = _no_checkpoint
    sleep: Callable[[float], None] = time.sleep
    fence: Fence | None = None  # the lease's generation; None only outside a bot tick (writes unguarded)
    # Why a first leg of this pair may not go out now ("" when it may): an active halt (the account's, system-wide,
    # or the pair's pause), or the pair has left the account's level. Asked right before every first leg goes out,
    # also one planned this tick: a halt or a level change can land while earlier trades fill.
    entry_refusal: Callable[[int], str] | None = None
    # Why a trade's entry no longer holds now ("" when it does): its signal is no longer fresh, the rule has left the
    # position, or entry_refusal's halt or level change. Asked before a stale second opening leg is sent late.
    entry_lapsed: Callable[[PairTrade], str] | None = None
    # No new trade when the scheduled guard has not checked the account for this long (``execution.bot.guard_watch``;
    # live ticks only, None: not asked).
    guard_max_age: timedelta | None = None
    planned_now: set[int] = field(default_factory=set)  # orders written this tick: known not to be sent yet
    settled: set[int] = field(default_factory=set)  # trades compared with the exchange this tick
    contradicted: dict[int, set[str]] = field(default_factory=dict)  # trade -> legs the exchange holds otherwise
    # trade -> legs the exchange showed flat (read twice) with no execution to explain it: not closed again
    gone: dict[int, set[str]] = field(default_factory=dict)
    _lease_renewed: float = field(default_factory=time.monotonic)
    events: list[str] = field(default_factory=list)
    _symbols: dict[int, str] = field(default_factory=dict)

    def renew_lease(self, *, now: bool = False) -> None:
        """Renew the lease during a long tick (exchange retries can take a while), or at once with ``now`` (before
        an order goes out); LeaseLost when another worker holds it."""
        if self.fence is None or (not now and time.monotonic() - self._lease_renewed < LEASE_RENEW_AFTER_S):
            return
        self.fence.renew()
        self._lease_renewed = time.monotonic()

    def save(self, instance, fields) -> None:
        """Write ``fields`` of a model instance under the lease: one UPDATE that does nothing (and raises
        LeaseLost) when another worker took the lease over. ``updated_at`` is set when it is named."""
        fields = list(fields)
        if "updated_at" in fields:
            instance.updated_at = timezone.now()
        attnames = [instance._meta.get_field(name).attname for name in fields]
        if self.fence is None:
            type(instance).objects.filter(pk=instance.pk).update(
                **{attname: getattr(instance, attname) for attname in attnames})
        else:
            self.fence.update_row(instance, attnames)

    def hold_lease(self) -> None:
        """Inside a transaction that inserts: keep the lease from changing hands until it commits."""
        if self.fence is not None:
            self.fence.lock()

    def closes(self, instrument_ids) -> dict[int, Decimal]:
        return self.market.closes(instrument_ids) if self.market is not None else {}

    def symbol(self, instrument: Instrument) -> str:
        if instrument.pk not in self._symbols:
            self._symbols[instrument.pk] = self.exchange.symbol_for(instrument)
        return self._symbols[instrument.pk]
