"""Live signals: every active pair's z-score and the rule's action at each closed bar.

The z-score is ``pairs.quant.spread_rule.rolling_zscore`` (fitted on the ``zscore_window_bars`` bars before the
bar, as in the walk-forward backtest) and the action is ``spread_rule.step`` advanced from the pair's persisted
``SignalState``: the same code, parameters and state as the backtest, bar by bar. Each (pair, bar) is written
once: a bar already signalled is never advanced again, so a repeated or overlapping run changes nothing, and a
run after an outage catches up on every bar it missed, in order.

A pair seen for the first time starts flat at the newest closed bar (its history was the backtest's business).

Prices come from a ``pairs.market.MarketView``: by default ``StoredMarket`` (the Candle table, read at every call,
as live trading does); a replay passes one that answers from history held in memory, with the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

import numpy as np
from django.db import connection, transaction
from django.db.models.constants import OnConflict
from django.utils import timezone

from core.market_clock import market_clock
from execution.models import Signal, SignalState
from pairs.market import MarketView, StoredMarket
from pairs.marketdata.grid import PriceWindow
from pairs.marketdata.validation import timeframe_ms
from pairs.models import Pair, StrategyConfig
from pairs.quant.spread_rule import ACTION_LABELS, RuleState, max_holding_bars, rolling_zscore_pairs, step
from pairs.services.evidence import rule_params


@dataclass
class SignalRun:
    bars: int = 0
    signals: int = 0
    entries: int = 0
    closes: int = 0
    pairs: int = 0
    skipped_pairs: int = 0  # a leg without enough history, or without the newest bar


def signal_pairs(config: StrategyConfig) -> list[Pair]:
    return list(
        Pair.objects.filter(status=Pair.Status.ACTIVE, timeframe=config.timeframe,
                            y_instrument__exchange=config.exchange)
        .select_related("y_instrument", "x_instrument", "signal_state")
        .order_by("pk")
    )


# An outage longer than this (a week of hourly bars) is not replayed bar by bar: the rule restarts flat from the
# window (``_restart``).
MAX_CATCH_UP_BARS = 168


def signals_update(
    *, config: StrategyConfig, end: datetime | None = None, max_catch_up_bars: int = MAX_CATCH_UP_BARS,
    market: MarketView | None = None, pairs: list[Pair] | None = None,
) -> SignalRun:
    """Advance every active pair's rule to the newest closed bar (or ``end``), writing one Signal per new bar.
    ``market``: where closes come from (default: the Candle table at ``core.market_clock``, the wall clock live).
    ``pairs``: the active pairs as ``signal_pairs`` loads them (default: loaded now); a caller that passes the same
    list again (a replay, bar after bar) gets each pair's ``signal_state`` kept up to date in place."""
    run = SignalRun()
    pairs = signal_pairs(config) if pairs is None else pairs
    if not pairs:
        return run
    market = market or StoredMarket(timeframe=config.timeframe, clock=market_clock())
    if market.timeframe != config.timeframe:
        raise ValueError(f"the market holds {market.timeframe} bars, the strategy trades {config.timeframe}")
    loaded = _load_window(config, market, pairs, end, max_catch_up_bars)
    if loaded is None:
        return run
    window, tradable = loaded
    run.skipped_pairs = len(pairs) - len(tradable)
    run.pairs = len(tradable)
    if not tradable:
        return run
    states, new_signals = _advance(config, window, tradable, run)
    _store(states, new_signals, config.timeframe)
    run.signals = len(new_signals)
    return run


def _load_window(config: StrategyConfig, market: MarketView, pairs: list[Pair], end: datetime | None,
                 max_catch_up_bars: int) -> tuple[PriceWindow, list[Pair]] | None:
    """The closes the rule needs (the z-score's fit window plus every bar some pair has not been advanced on) and
    the pairs that can be advanced on them; None when there is nothing to read."""
    legs = {p.y_instrument_id: p.y_instrument for p in pairs} | {p.x_instrument_id: p.x_instrument for p in pairs}
    newest_of = market.newest_bars(list(legs), end=end)
    if not newest_of:
        return None
    newest_bar = max(newest_of.values())
    oldest_state = min((p.signal_state.last_bar_time for p in pairs if hasattr(p, "signal_state")), default=newest_bar)
    behind = round((newest_bar - oldest_state) / timedelta(milliseconds=timeframe_ms(config.timeframe)))
    window = market.window(list(legs.values()), bars=config.zscore_window_bars + 1 + min(max(behind, 1),
                                                                                         max_catch_up_bars),
                           end=newest_bar)
    if not len(window.times):
        return None
    # A leg whose newest bar is missing would be forward-filled into the newest bar: such a pair waits for the
    # next run (it catches up then) instead of trading on a stale price.
    window_end = window.times[-1].to_pydatetime()
    fresh = {iid for iid, newest in newest_of.items() if newest >= window_end}
    column = {iid for iid in window.instrument_ids if iid in fresh}
    return window, [p for p in pairs if p.y_instrument_id in column and p.x_instrument_id in column]


def _advance(config: StrategyConfig, window: PriceWindow, tradable: list[Pair], run: SignalRun
             ) -> tuple[list[SignalState], list[NewSignal]]:
    """Step every tradable pair's rule over the bars it has not seen, in order; the states are updated in place and
    the signals of every new bar returned."""
    column = {iid: k for k, iid in enumerate(window.instrument_ids)}
    y = np.array([column[p.y_instrument_id] for p in tradable])
    x = np.array([column[p.x_instrument_id] for p in tradable])
    log_prices = np.log(window.closes)
    rolling = rolling_zscore_pairs(log_prices, y, x, config.zscore_window_bars)
    spreads = log_prices[:, y] - rolling.intercept - rolling.hedge_ratio * log_prices[:, x]
    times = list(window.times.to_pydatetime())
    states = [_state_of(pair, times) for pair in tradable]
    open_ns = window.times.as_unit("ns").asi8
    last_seen = np.array([np.searchsorted(open_ns, _ns(s.last_bar_time), side="right") - 1 for s in states])
    for k in np.flatnonzero(last_seen < config.zscore_window_bars - 1):
        _restart(states[k])  # behind by more than the catch-up: its bars up to the window are not replayed
    params = rule_params(config)
    holding = max_holding_bars(np.array([p.half_life_bars or np.nan for p in tradable], dtype=float), params)
    rule = RuleState(
        position=np.array([s.position for s in states], dtype=np.int8),
        entry_bar=np.array([s.entry_bar for s in states], dtype=np.int64),
        bars_held=np.array([s.bars_held for s in states], dtype=np.int64),
        cooldown=np.array([s.cooldown for s in states], dtype=np.int64),
    )
    bar_index = np.array([s.bar_index for s in states], dtype=np.int64)
    new_signals: list[NewSignal] = []
    for t in range(max(int(last_seen.min()) + 1, config.zscore_window_bars), len(times)):
        due = last_seen < t  # pairs not yet advanced on this bar
        if not due.any():
            continue
        # Entry bars count each pair's own bars (bar_index), so they mean the same thing from run to run.
        actions, advanced = step(rule, rolling.zscore[t], params, max_holding_bars=holding, bar_index=bar_index + 1)
        rule = RuleState(
            position=np.where(due, advanced.position, rule.position).astype(np.int8),
            entry_bar=np.where(due, advanced.entry_bar, rule.entry_bar),
            bars_held=np.where(due, advanced.bars_held, rule.bars_held),
            cooldown=np.where(due, advanced.cooldown, rule.cooldown),
        )
        bar_index = np.where(due, bar_index + 1, bar_index)
        last_seen = np.where(due, t, last_seen)
        run.bars += 1
        for k in np.flatnonzero(due):
            z = rolling.zscore[t, k]
            if not np.isfinite(z):
                continue  # not enough history for a z-score yet: nothing to signal
            label = ACTION_LABELS[int(actions[k])]
            new_signals.append(NewSignal(tradable[k].pk, times[t], float(z), float(spreads[t, k]),
                                         float(rolling.hedge_ratio[t, k]), label))
            run.entries += label in (Signal.Action.ENTER_LONG, Signal.Action.ENTER_SHORT)
            run.closes += label in (Signal.Action.EXIT, Signal.Action.STOP, Signal.Action.MAX_HOLDING)
    for k, state in enumerate(states):
        state.last_bar_time = times[int(last_seen[k])]
        state.bar_index = int(bar_index[k])
        state.position = int(rule.position[k])
        state.entry_bar = int(rule.entry_bar[k])
        state.bars_held = int(rule.bars_held[k])
        state.cooldown = int(rule.cooldown[k])
    return states, new_signals


def _state_of(pair: Pair, times: list[datetime]) -> SignalState:
    """The pair's persisted rule state, or on first sight a flat one, as if advanced up to the bar before the
    newest."""
    state = getattr(pair, "signal_state", None)
    if state is None:
        state = SignalState(pair=pair, last_bar_time=times[-2] if len(times) > 1 else times[-1])
    return state


def _restart(state: SignalState) -> None:
    """Flat and without cooldown, as a new pair starts: a state more than ``MAX_CATCH_UP_BARS`` behind (a long
    outage, a pair active again after weeks) has bars no catch-up steps through, so its position, holding time and
    cooldown would go on as if those bars never happened (a position held past its holding limit, or one the rule
    left long ago still blocking the pair's entries). A trade still open on it is closed by the bot (the rule no
    longer holds it)."""
    state.position, state.entry_bar, state.bars_held, state.cooldown = 0, -1, 0, 0


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


class NewSignal(NamedTuple):
    """A Signal row to insert: plain values, as a model instance per row and bar costs more than the insert."""

    pair_id: int
    bar_time: datetime
    zscore: float
    spread: float
    hedge_ratio: float  # of the rolling fit behind ``spread`` and ``zscore``: the one the bot sizes the legs with
    action: str


_STATE_FIELDS = ("last_bar_time", "bar_index", "position", "entry_bar", "bars_held", "cooldown")


@transaction.atomic(savepoint=False)  # nothing catches its errors and goes on: the savepoint's round trips buy nothing
def _store(states: list[SignalState], signals: list[NewSignal], timeframe: str) -> None:
    # A signal already written for a (pair, bar) is left as it was: the first computation of a bar is the one
    # the bots may have acted on.
    try:
        _insert_signals(signals, timeframe)
        _update_states([s for s in states if s.pk])
        SignalState.objects.bulk_create([s for s in states if not s.pk], batch_size=500)
    except BaseException:
        for state in states:  # rolled back: what they remember writing isn't stored, so write every field next time
            state.__dict__.pop("_written", None)
        raise


def _insert_signals(signals: list[NewSignal], timeframe: str) -> None:
    """``bulk_create(signals, ignore_conflicts=True)`` as one prepared INSERT run for every row (the driver batches
    it): building the statement through the ORM costs more than the insert when it runs every bar (a replay)."""
    if not signals:
        return
    ops = connection.ops
    names = ("pair", "timeframe", "bar_time", "zscore", "spread", "hedge_ratio", "action", "created_at")
    fields = [Signal._meta.get_field(name) for name in names]
    sql = (
        f"{ops.insert_statement(on_conflict=OnConflict.IGNORE)} {ops.quote_name(Signal._meta.db_table)} "
        f"({', '.join(ops.quote_name(f.column) for f in fields)}) VALUES ({', '.join(['%s'] * len(fields))}) "
        + ops.on_conflict_suffix_sql(fields, OnConflict.IGNORE, None, None)
    ).strip()
    created = ops.adapt_datetimefield_value(timezone.now())
    adapted: dict[datetime, object] = {}
    rows = []
    for signal in signals:
        if signal.bar_time not in adapted:
            adapted[signal.bar_time] = ops.adapt_datetimefield_value(signal.bar_time)
        rows.append([signal.pair_id, timeframe, adapted[signal.bar_time], signal.zscore, signal.spread,
                     signal.hedge_ratio, signal.action, created])
    with connection.cursor() as cursor:
        for start in range(0, len(rows), _INSERT_BATCH_ROWS):
            cursor.executemany(sql, rows[start : start + _INSERT_BATCH_ROWS])


# Rows per executemany of the signal insert (MySQL's driver turns each into one multi-row INSERT).
_INSERT_BATCH_ROWS = 1000


def _update_states(states: list[SignalState]) -> None:
    """``bulk_update(states, _STATE_FIELDS)`` as one UPDATE per batch of states, built directly: the ORM's version
    costs more than the update itself when it runs every bar (a replay). A state this function wrote before (a
    replay passes the same objects bar after bar, nothing else writes them, and a bar that fails ends the replay) is
    compared with what it wrote: an unchanged state is left out, a field that changed in none is left out, and a
    field with one value for the whole batch is set to it, instead of a CASE over every state (#18)."""
    changed = [state for state in states if getattr(state, "_written", None) != _state_values(state)]
    for start in range(0, len(changed), _UPDATE_BATCH_ROWS):
        batch = changed[start : start + _UPDATE_BATCH_ROWS]
        with connection.cursor() as cursor:
            cursor.execute(*_update_statement(batch))
        for state in batch:
            state._written = _state_values(state)


def _state_values(state: SignalState) -> tuple:
    return tuple(getattr(state, name) for name in _STATE_FIELDS)


def _update_statement(batch: list[SignalState]) -> tuple[str, list]:
    """The UPDATE of ``batch`` (states whose values differ from those written, or were never written here, so at
    least one field is assigned) and its parameters."""
    quote = connection.ops.quote_name
    pk = quote(SignalState._meta.pk.column)
    assignments, params = [], []
    for k, name in enumerate(_STATE_FIELDS):
        column = quote(SignalState._meta.get_field(name).column)
        values = [getattr(state, name) for state in batch]
        moved = [(state.pk, value) for state, value in zip(batch, values, strict=True)
                 if getattr(state, "_written", None) is None or state._written[k] != value]
        if not moved:
            continue
        if name == "last_bar_time":  # the states of one run share a few bar times: each adapted once
            adapted = {value: connection.ops.adapt_datetimefield_value(value) for value in set(values)}
            values = [adapted[value] for value in values]
            moved = [(state_pk, adapted[value]) for state_pk, value in moved]
        if len(set(values)) == 1:  # e.g. every state's last bar: one value for the whole batch
            assignments.append(f"{column} = %s")
            params.append(values[0])
            continue
        assignments.append(f"{column} = CASE {pk} {' '.join(['WHEN %s THEN %s'] * len(moved))} ELSE {column} END")
        params += [item for pair in moved for item in pair]
    sql = (f"UPDATE {quote(SignalState._meta.db_table)} SET {', '.join(assignments)} "  # noqa: S608
           f"WHERE {pk} IN ({', '.join(['%s'] * len(batch))})")
    return sql, params + [state.pk for state in batch]


# States per UPDATE: 13 parameters each, well within every backend's limit on parameters per statement.
_UPDATE_BATCH_ROWS = 500
