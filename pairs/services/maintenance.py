"""Sanity checks and cleanup of the selection layer, each with a documented rule and a count in the summary.

| check | rule |
|---|---|
| candle retention | candles older than ``candle_retention_days`` before the newest bar (below) are deleted |
| stale symbols | a trading instrument whose newest bar lags the universe's newest bar by more than
  ``stale_after_bars`` bars is stale; its active pairs are suspended ("leg lost data") |
| stale universe | the universe's newest bar older than ``stale_after_bars`` bars before ``now``: the data
  feed is down; reported, and no pair is touched (a feed outage is not the pairs' fault) |
| delisted instruments | every non-retired pair with a delisted leg is retired and leaves its level |
| pairs whose legs lost data | a suspended pair whose legs are fresh again returns to active; one whose leg
  has been stale for more than ``retire_after_stale_bars`` bars is retired and leaves its level |
| orphan rows | delisted instruments with no candles, no pairs and no orders are deleted |

Time is the data's clock (the newest bar closed at ``now``, the engine's clock: the wall clock live, the stored-data
clock in the demo, the graded moment of ``update_stats --end``), so a replay over history or an offline import ages
nothing by accident; only the feed check compares that bar with ``now`` itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import models, transaction
from django.db.models import Exists, Max, OuterRef, Q
from django.utils import timezone

from core.audit import audit_record
from pairs.marketdata.validation import timeframe_ms
from pairs.models import Candle, Instrument, Pair, StrategyConfig
from pairs.services.levels import pair_set_level

logger = logging.getLogger(__name__)

# Candles are deleted in chunks so one statement never holds locks on millions of rows.
DELETE_CHUNK_ROWS = 50_000


@dataclass
class MaintenanceSummary:
    newest_bar: datetime | None = None
    feed_stale: bool = False
    candles_deleted: int = 0
    stale_symbols: list[str] = field(default_factory=list)
    pairs_suspended: int = 0
    pairs_resumed: int = 0
    pairs_retired: int = 0
    pairs_retired_stale: int = 0
    orphan_instruments_deleted: int = 0

    def as_dict(self) -> dict:
        return {
            "newest_bar": self.newest_bar.isoformat() if self.newest_bar else None,
            "feed_stale": self.feed_stale,
            "candles_deleted": self.candles_deleted,
            "stale_symbols": self.stale_symbols,
            "pairs_suspended": self.pairs_suspended,
            "pairs_resumed": self.pairs_resumed,
            "pairs_retired": self.pairs_retired,
            "pairs_retired_stale": self.pairs_retired_stale,
            "orphan_instruments_deleted": self.orphan_instruments_deleted,
        }


def selection_maintenance(*, config: StrategyConfig, now: datetime | None = None) -> MaintenanceSummary:
    now = now or timezone.now()
    summary = MaintenanceSummary()
    step = timedelta(milliseconds=timeframe_ms(config.timeframe))
    # The data's clock is the newest bar closed at ``now``: a bar after it (a replay's or the demo's future, or a
    # grading of history with ``update_stats --end``) is neither the newest nor a reason to call a symbol stale.
    candles = Candle.objects.filter(instrument__exchange=config.exchange, timeframe=config.timeframe,
                                    open_time__lte=now - step)
    summary.newest_bar = candles.aggregate(newest=Max("open_time"))["newest"]
    summary.pairs_retired = _retire_pairs_with_delisted_legs()
    if summary.newest_bar is None:
        summary.orphan_instruments_deleted = _delete_orphan_instruments()
        return summary
    summary.feed_stale = now - summary.newest_bar > step * (config.stale_after_bars + 1)
    if summary.feed_stale:
        logger.warning("market data feed stale: newest %s bar is %s", config.timeframe, summary.newest_bar)
    summary.candles_deleted = _delete_old_candles(
        candles, before=summary.newest_bar - timedelta(days=config.candle_retention_days)
    )
    if not summary.feed_stale:
        stale_after = summary.newest_bar - step * config.stale_after_bars
        newest_per_instrument = dict(
            candles.values_list("instrument_id")
            .annotate(newest=Max("open_time"))
            .values_list("instrument_id", "newest")
        )
        trading = Instrument.objects.filter(exchange=config.exchange, status=Instrument.Status.TRADING)
        stale_ids = {
            i.pk for i in trading
            if newest_per_instrument.get(i.pk) is None or newest_per_instrument[i.pk] < stale_after
        }
        summary.stale_symbols = sorted(Instrument.objects.filter(pk__in=stale_ids).values_list("symbol", flat=True))
        summary.pairs_suspended, summary.pairs_resumed = _suspend_or_resume(stale_ids, config)
        long_stale_before = summary.newest_bar - step * config.retire_after_stale_bars
        long_stale_ids = {
            i for i in stale_ids
            if newest_per_instrument.get(i) is None or newest_per_instrument[i] < long_stale_before
        }
        # Staleness is of the configuration's timeframe: a pair of another one (kept from before a switch) is not
        # judged on bars it doesn't read, as the suspension above doesn't judge it either.
        summary.pairs_retired_stale = _retire(
            Pair.objects.filter(timeframe=config.timeframe)
            .filter(Q(y_instrument_id__in=long_stale_ids) | Q(x_instrument_id__in=long_stale_ids)),
            reason=f"retired: a leg has had no data for more than {config.retire_after_stale_bars} bars",
        )
    summary.orphan_instruments_deleted = _delete_orphan_instruments()
    return summary


def _delete_old_candles(candles, *, before: datetime) -> int:
    deleted = 0
    while True:
        ids = list(candles.filter(open_time__lt=before).values_list("pk", flat=True)[:DELETE_CHUNK_ROWS])
        if not ids:
            return deleted
        deleted += Candle.objects.filter(pk__in=ids).delete()[0]


def _retire_pairs_with_delisted_legs() -> int:
    delisted = Q(y_instrument__status=Instrument.Status.DELISTED) | Q(x_instrument__status=Instrument.Status.DELISTED)
    return _retire(Pair.objects.filter(delisted), reason="retired: a leg was delisted")


def _retire(pairs, *, reason: str) -> int:
    retired = 0
    for pair in pairs.exclude(status=Pair.Status.RETIRED):
        with transaction.atomic():
            # Retiring overrides a person's lock: a contract without data can't be traded whatever anyone chose.
            pair_set_level(pair=pair, level=None, reason=reason, changed_by=None, force=True)
            Pair.objects.filter(pk=pair.pk).update(status=Pair.Status.RETIRED, updated_at=timezone.now())
        retired += 1
    return retired


def _suspend_or_resume(stale_ids: set[int], config: StrategyConfig) -> tuple[int, int]:
    stale_leg = Q(y_instrument_id__in=stale_ids) | Q(x_instrument_id__in=stale_ids)
    suspend = Pair.objects.filter(status=Pair.Status.ACTIVE, timeframe=config.timeframe).filter(stale_leg)
    resume = Pair.objects.filter(status=Pair.Status.SUSPENDED, timeframe=config.timeframe).exclude(stale_leg)
    return (_set_status(suspend, Pair.Status.SUSPENDED, "suspend_pairs", "suspended: a leg's data is stale"),
            _set_status(resume, Pair.Status.ACTIVE, "resume_pairs", "resumed: its legs' data is fresh again"))


def _set_status(pairs, status: str, action: str, reason: str) -> int:
    """Set ``status`` on ``pairs`` and leave it in the audit, naming them: the status decides whether a pair trades,
    and a pair that stopped trading without a trace had nobody able to say when or why."""
    with transaction.atomic():
        ids = sorted(pairs.select_for_update().values_list("pk", flat=True))  # the pairs' rows only, not their legs'
        if not ids:
            return 0
        Pair.objects.filter(pk__in=ids).update(status=status, updated_at=timezone.now())
        names = sorted(str(p) for p in Pair.objects.filter(pk__in=ids).select_related("y_instrument", "x_instrument"))
        audit_record(action=action, channel="system", actor_label="maintenance",
                     summary=f"{len(ids)} pair(s) {reason}: {', '.join(names)}",
                     details={"pairs": names, "pair_ids": ids})
    return len(ids)


def _delete_orphan_instruments() -> int:
    """Delete delisted instruments that nothing refers to. "Nothing" is read from Django's registry of relations
    rather than from a list of models: rows of apps above this one (orders, funding payments) keep an instrument
    alive without this app naming them. Relations that would cascade (funding rates) don't count, but candles do:
    an instrument with data is kept until retention removes the data."""
    references = [
        ~Exists(relation.related_model._base_manager.filter(**{relation.field.name: OuterRef("pk")}))
        for relation in Instrument._meta.related_objects
        if relation.on_delete is not models.CASCADE or relation.related_model is Candle
    ]
    orphans = Instrument.objects.filter(status=Instrument.Status.DELISTED).filter(*references)
    return orphans.delete()[0]
