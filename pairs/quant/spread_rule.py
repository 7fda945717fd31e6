"""The spread trading rule and the z-scores it reads. Pure: numpy only, no Django, no ccxt.

This is the one implementation of the rule: the backtest, the replay and the live signal generator all go through
``step``. It is a state machine over arrays, one entry per pair, advanced one bar at a time:

* ``step(state, z, params, ...)`` takes every pair's state and the new bar's z-scores and returns the action of
  each pair and the new state (vectorised over pairs; the backtest calls it bar by bar, see ``run_rule``);
* ``step_one(state, z, params, ...)`` is the scalar convenience for live use: one pair's persisted ``PairState``
  and one z in, one ``Action`` and the new ``PairState`` out. It wraps ``step``, so it cannot disagree with it.

The rule (``RuleParams``), evaluated on each bar's z-score after the bar has closed:

* flat: enter long spread (long y, short beta x) when ``-stop_z < z <= -entry_z``, short spread when
  ``entry_z <= z < stop_z``; not while cooling down after a stop, never on a NaN z (not enough history), and never
  when ``|z| >= stop_z`` (a z already at or beyond the stop is a break, not a reversion opportunity);
* long spread: stop when ``z <= -stop_z``, else exit when ``z >= -exit_z`` (the spread crossed back to ``exit_z``;
  with ``exit_z = 0`` that is the mean);
* short spread: stop when ``z >= stop_z``, else exit when ``z <= exit_z``;
* in a position that neither stopped nor exited: close with ``max_holding`` once ``bars_held >= max_holding_bars``.

Conventions
- Precedence on one bar: stop, then exit, then max holding (a bar that both stops and hits the holding limit is a
  stop, and starts the cooldown).
- No exit and entry on the same bar: a pair that closes on bar t is flat for the rest of bar t and can enter on
  bar t + 1 at the earliest (a reversal takes two bars). The same holds for an entry: nothing else happens on the
  entry bar, the exit conditions are first checked on the next bar.
- No entry when ``|z|`` is at or beyond ``stop_z``: such a bar would be stopped out on the next bar at a z
  at least as bad (an audit found a short entered at z = 10.95 at the close of a +45% hourly pump). The bar is
  simply not an entry; it starts no cooldown. With ``stop_z = inf`` every ``|z| >= entry_z`` still enters.
- ``bars_held`` is 0 on the entry bar and grows by one per bar; with ``max_holding_bars = h`` a position entered on
  bar e is closed on bar e + h at the latest. ``max_holding_bars`` is per pair and given in bars: the caller
  converts from half-lives with ``max_holding_bars(half_life, params)`` =
  ``ceil(max_holding_half_lives * half_life)`` (at least 1; no limit, ``inf``, for a missing or non-positive
  half-life).
- Cooldown: a stop on bar s blocks entries on bars s + 1 .. s + cooldown_bars (exactly ``cooldown_bars`` bars); the
  first possible entry is on bar s + cooldown_bars + 1. Exits and max-holding closes start no cooldown.
- A NaN z takes no z-based decision: no entry, no exit, no stop. The holding limit still applies (it depends on
  time only), and a cooldown still counts down (bars are bars).
- ``step`` must be called once per closed bar, in order, without gaps; ``bars_held`` and the cooldown count calls.

Defaults: ``entry_z = 2``, ``exit_z = 0``, ``stop_z = 4`` (the research baseline in docs/research-notes.md),
``max_holding_half_lives = 3`` and ``cooldown_bars = 24`` (one day of hourly bars).

Z-scores
- ``rolling_zscore`` (no look-ahead): at bar t the hedge ratio and intercept come from the OLS of log y on log x
  over bars [t - window, t), strictly before t; the spread's mean and standard deviation are taken over the same
  bars with those coefficients, and ``z_t = (s_t - mean) / std`` with ``s_t = log y_t - intercept - beta log x_t``
  from bar t's prices. The mean of in-sample OLS residuals is exactly 0, so ``z_t = s_t / std``; ``std`` is the
  sample standard deviation (ddof=1, like ``pairs.quant.spread``). NaN for t < window and where the window has no
  variance in log x or in the residuals.
- ``fixed_zscore``: coefficients, mean and std fitted once (on a whole formation window) and applied to every bar;
  for in-sample backtests, where look-ahead inside the formation window is the point.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

# A residual sum of squares below this fraction of the window's variance of log y is treated as a perfect fit:
# its standard deviation is rounding noise and would give absurd z-scores.
_PERFECT_FIT_TOLERANCE = 1e-10
# The fewest bars a rolling hedge ratio, mean and standard deviation are fitted on (fewer have no spread).
MIN_ZSCORE_WINDOW_BARS = 2


class Action(enum.IntEnum):
    """What the rule does on a bar. ``label`` matches execution's ``Signal.Action`` values where they overlap."""

    HOLD = 0
    ENTER_LONG = 1
    ENTER_SHORT = 2
    EXIT = 3
    STOP = 4
    MAX_HOLDING = 5
    # Backtests only: a position still open on the last bar of the data is closed there (never from ``step``).
    END_OF_DATA = 6

    @property
    def label(self) -> str:
        return self.name.lower()


ACTION_LABELS: tuple[str, ...] = tuple(action.label for action in Action)
ENTRY_ACTIONS = (Action.ENTER_LONG, Action.ENTER_SHORT)
CLOSE_ACTIONS = (Action.EXIT, Action.STOP, Action.MAX_HOLDING, Action.END_OF_DATA)


@dataclass(frozen=True)
class RuleParams:
    """Thresholds of the rule, in z-score units; see the module docstring for the rule itself."""

    entry_z: float = 2.0
    exit_z: float = 0.0
    stop_z: float = 4.0
    max_holding_half_lives: float = 3.0
    cooldown_bars: int = 24

    def __post_init__(self) -> None:
        if not (self.entry_z > 0 and math.isfinite(self.entry_z)):
            raise ValueError("entry_z must be a positive finite number")
        if not self.stop_z > self.entry_z:
            raise ValueError("stop_z must be above entry_z (inf disables the stop)")
        if not (math.isfinite(self.exit_z) and self.exit_z < self.entry_z):
            raise ValueError("exit_z must be finite and below entry_z")
        if not self.max_holding_half_lives > 0:
            raise ValueError("max_holding_half_lives must be positive (inf disables the limit)")
        if int(self.cooldown_bars) != self.cooldown_bars or self.cooldown_bars < 0:
            raise ValueError("cooldown_bars must be a non-negative integer")


def max_holding_bars(half_life: float | np.ndarray, params: RuleParams) -> float | np.ndarray:
    """Holding limit in bars from a half-life in bars: ``ceil(max_holding_half_lives * half_life)``, at least 1.

    ``inf`` (no limit) where the half-life is NaN, infinite or not positive.
    """
    half_lives = np.asarray(half_life, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        bars = np.maximum(np.ceil(params.max_holding_half_lives * half_lives), 1.0)
    bars = np.where(np.isfinite(half_lives) & (half_lives > 0) & np.isfinite(bars), bars, np.inf)
    return float(bars) if bars.ndim == 0 else bars


@dataclass(frozen=True)
class RuleState:
    """State of many pairs (arrays of equal length).

    ``position``: +1 long spread, -1 short spread, 0 flat; ``entry_bar``: bar index of the open position's entry
    (-1 when flat); ``bars_held``: bars since the entry (0 on the entry bar, 0 when flat); ``cooldown``: bars
    without entries still to go after a stop.
    """

    position: np.ndarray
    entry_bar: np.ndarray
    bars_held: np.ndarray
    cooldown: np.ndarray

    @classmethod
    def flat(cls, n_pairs: int) -> RuleState:
        return cls(
            position=np.zeros(n_pairs, dtype=np.int8),
            entry_bar=np.full(n_pairs, -1, dtype=np.int64),
            bars_held=np.zeros(n_pairs, dtype=np.int64),
            cooldown=np.zeros(n_pairs, dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.position)


@dataclass(frozen=True)
class PairState:
    """State of one pair, for live use; ``to_dict``/``from_dict`` give a JSON-friendly form to persist."""

    position: int = 0
    entry_bar: int = -1
    bars_held: int = 0
    cooldown: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"position": self.position, "entry_bar": self.entry_bar, "bars_held": self.bars_held,
                "cooldown": self.cooldown}

    @classmethod
    def from_dict(cls, values: dict) -> PairState:
        return cls(**{name: int(values[name]) for name in ("position", "entry_bar", "bars_held", "cooldown")})


def step(
    state: RuleState,
    z: np.ndarray,
    params: RuleParams,
    *,
    max_holding_bars: float | np.ndarray = np.inf,
    bar_index: int = 0,
    allow_entry: bool | np.ndarray = True,
) -> tuple[np.ndarray, RuleState]:
    """Advance every pair by one bar: ``(actions, new_state)``, actions as int8 ``Action`` codes.

    ``z``: this bar's z-score per pair (NaN: no z-based decision). ``max_holding_bars``: per pair or one for all
    (``inf``: no limit). ``bar_index`` is recorded as the entry bar of new positions. ``allow_entry=False`` blocks
    new entries on this bar (the backtest uses it on the last bar, where a position could not be held).
    """
    z = np.asarray(z, dtype=np.float64)
    position = state.position
    long = position > 0
    short = position < 0
    in_position = long | short
    finite = np.isfinite(z)
    held = np.where(in_position, state.bars_held + 1, 0)

    stop = finite & ((long & (z <= -params.stop_z)) | (short & (z >= params.stop_z)))
    exit_ = finite & ~stop & ((long & (z >= -params.exit_z)) | (short & (z <= params.exit_z)))
    holding_limit = in_position & ~stop & ~exit_ & (held >= max_holding_bars)
    closing = stop | exit_ | holding_limit

    cooling = ~in_position & (state.cooldown > 0)
    may_enter = ~in_position & ~cooling & finite & allow_entry
    enter_long = may_enter & (z <= -params.entry_z) & (z > -params.stop_z)
    enter_short = may_enter & (z >= params.entry_z) & (z < params.stop_z)
    entering = enter_long | enter_short

    actions = np.zeros(position.shape, dtype=np.int8)
    actions[enter_long] = Action.ENTER_LONG
    actions[enter_short] = Action.ENTER_SHORT
    actions[exit_] = Action.EXIT
    actions[stop] = Action.STOP
    actions[holding_limit] = Action.MAX_HOLDING

    new_position = np.where(closing, 0, position).astype(np.int8)
    new_position[enter_long] = 1
    new_position[enter_short] = -1
    new_state = RuleState(
        position=new_position,
        entry_bar=np.where(entering, bar_index, np.where(closing, -1, state.entry_bar)),
        bars_held=np.where(closing, 0, held),
        cooldown=np.where(stop, params.cooldown_bars, np.where(cooling, state.cooldown - 1, state.cooldown)),
    )
    return actions, new_state


def step_one(
    state: PairState,
    z: float | None,
    params: RuleParams,
    *,
    max_holding_bars: float = np.inf,
    bar_index: int = 0,
) -> tuple[Action, PairState]:
    """One pair, one new closed bar: ``(action, new_state)``; ``action.label`` is the Signal.Action value.

    ``z=None`` is treated as NaN. Built on ``step``, so live and backtest decisions are the same by construction.
    """
    arrays = RuleState(
        position=np.array([state.position], dtype=np.int8),
        entry_bar=np.array([state.entry_bar], dtype=np.int64),
        bars_held=np.array([state.bars_held], dtype=np.int64),
        cooldown=np.array([state.cooldown], dtype=np.int64),
    )
    value = np.nan if z is None else float(z)
    actions, new = step(arrays, np.array([value]), params, max_holding_bars=max_holding_bars, bar_index=bar_index)
    return Action(int(actions[0])), PairState(
        position=int(new.position[0]),
        entry_bar=int(new.entry_bar[0]),
        bars_held=int(new.bars_held[0]),
        cooldown=int(new.cooldown[0]),
    )


def run_rule(
    z: np.ndarray,
    params: RuleParams,
    *,
    max_holding_bars: float | np.ndarray = np.inf,
    state: RuleState | None = None,
    first_bar_index: int = 0,
    entries_on_last_bar: bool = True,
    no_entries_after: int | None = None,
) -> tuple[np.ndarray, RuleState]:
    """``step`` over the rows of a (T, M) z matrix: ``(actions (T, M) int8, final state)``.

    Starts flat unless ``state`` is given; row t gets bar index ``first_bar_index + t``.
    ``entries_on_last_bar=False`` blocks entries on the last row; ``no_entries_after=k`` on every row after row k
    (the backtest's rows whose entry would fill too late to be held).
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError("z must be a (T, M) array")
    n_bars, n_pairs = z.shape
    state = RuleState.flat(n_pairs) if state is None else state
    if len(state) != n_pairs:
        raise ValueError("state and z disagree on the number of pairs")
    actions = np.zeros((n_bars, n_pairs), dtype=np.int8)
    last_entry = n_bars - (1 if entries_on_last_bar else 2)
    if no_entries_after is not None:
        last_entry = min(last_entry, no_entries_after)
    for t in range(n_bars):
        actions[t], state = step(
            state,
            z[t],
            params,
            max_holding_bars=max_holding_bars,
            bar_index=first_bar_index + t,
            allow_entry=t <= last_entry,
        )
    return actions, state


# --- z-scores -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RollingZ:
    """Rolling fit per bar and pair, all (T, M); row t uses bars [t - window, t) only. NaN before ``window``."""

    zscore: np.ndarray
    hedge_ratio: np.ndarray
    intercept: np.ndarray
    spread_std: np.ndarray


def _window_sums(values: np.ndarray, window: int) -> np.ndarray:
    """Row t (for t >= window): sum over rows [t - window, t); rows before ``window`` are NaN."""
    cumulative = np.zeros((values.shape[0] + 1, *values.shape[1:]))
    np.cumsum(values, axis=0, out=cumulative[1:])
    sums = np.full(values.shape, np.nan)
    sums[window:] = cumulative[window:-1] - cumulative[: -window - 1]
    return sums


# Pairs per block of the rolling fit: its ~15 temporaries of (T, block) float64 stay small (2,000 bars x 512
# pairs is 8 MB each), which is faster than whole-matrix passes and bounds memory.
ROLLING_BLOCK_PAIRS = 512


def _rolling_fit(log_y: np.ndarray, log_x: np.ndarray, window: int, ddof: int) -> tuple[np.ndarray, ...]:
    """Rolling fit of (T, M) columns: (zscore, hedge_ratio, intercept, spread_std)."""
    y_reference = log_y[:window].mean(axis=0)
    x_reference = log_x[:window].mean(axis=0)
    y = log_y - y_reference
    x = log_x - x_reference

    mean_x = _window_sums(x, window) / window
    mean_y = _window_sums(y, window) / window
    sxx = _window_sums(x * x, window) - window * mean_x * mean_x
    sxy = _window_sums(x * y, window) - window * mean_x * mean_y
    syy = _window_sums(y * y, window) - window * mean_y * mean_y
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = sxy / sxx
        alpha = mean_y - beta * mean_x
        residual_ss = syy - beta * sxy
        valid = (sxx > 0) & (residual_ss > _PERFECT_FIT_TOLERANCE * syy)
        std = np.sqrt(np.where(valid, residual_ss, np.nan) / (window - ddof))
        z = (y - alpha - beta * x) / std
    beta = np.where(valid, beta, np.nan)
    # Back to the caller's (uncentred) log prices: y - a - b x = (Y - yr) - a - b (X - xr).
    intercept = np.where(valid, alpha + y_reference - beta * x_reference, np.nan)
    return z, beta, intercept, std


def _check_window(window: int, ddof: int) -> int:
    if int(window) != window or window <= ddof + 1:
        raise ValueError(f"window must be an integer above {ddof + 1}")
    return int(window)


def rolling_zscore(log_y: np.ndarray, log_x: np.ndarray, window: int, *, ddof: int = 1) -> RollingZ:
    """Rolling OLS z-score of the spreads of (T, M) log price columns (or 1-D single series), without look-ahead.

    O(T * M) from cumulative sums, in blocks of ``ROLLING_BLOCK_PAIRS`` columns. For numerical stability every
    column is first centred on the mean of its first ``window`` bars: a constant shift changes no fitted spread,
    and those bars precede every z that is produced, so no bar after t ever enters z_t, not even through
    rounding. Inputs must be finite (forward-fill first).
    """
    log_y = np.asarray(log_y, dtype=np.float64)
    log_x = np.asarray(log_x, dtype=np.float64)
    if log_y.shape != log_x.shape or log_y.ndim not in (1, 2):
        raise ValueError("log_y and log_x must be 1-D or (T, M) arrays of the same shape")
    if log_y.ndim == 1:
        fit = rolling_zscore(log_y[:, None], log_x[:, None], window, ddof=ddof)
        return RollingZ(*(getattr(fit, name)[:, 0] for name in ("zscore", "hedge_ratio", "intercept", "spread_std")))
    return _rolling_blocks(lambda columns: (log_y[:, columns], log_x[:, columns]), log_y.shape, window, ddof)


def rolling_zscore_pairs(
    log_prices: np.ndarray, y_index: np.ndarray, x_index: np.ndarray, window: int, *, ddof: int = 1
) -> RollingZ:
    """``rolling_zscore`` for pairs given as column indices into a (T, N) matrix of log prices."""
    log_prices = np.asarray(log_prices, dtype=np.float64)
    y_index = np.asarray(y_index)
    x_index = np.asarray(x_index)
    if y_index.shape != x_index.shape or y_index.ndim != 1:
        raise ValueError("y_index and x_index must be 1-D of equal length")
    return _rolling_blocks(
        lambda columns: (log_prices[:, y_index[columns]], log_prices[:, x_index[columns]]),
        (log_prices.shape[0], len(y_index)),
        window,
        ddof,
    )


def _rolling_blocks(columns_of, shape: tuple[int, int], window: int, ddof: int) -> RollingZ:
    window = _check_window(window, ddof)
    n_bars, n_pairs = shape
    outputs = tuple(np.full(shape, np.nan) for _ in range(4))
    if n_bars <= window:
        return RollingZ(*outputs)
    for start in range(0, n_pairs, ROLLING_BLOCK_PAIRS):
        columns = slice(start, start + ROLLING_BLOCK_PAIRS)
        log_y, log_x = columns_of(columns)
        if not (np.isfinite(log_y).all() and np.isfinite(log_x).all()):
            raise ValueError("log prices must be finite (forward-fill gaps, slice off bars before a listing)")
        for output, values in zip(outputs, _rolling_fit(log_y, log_x, window, ddof), strict=True):
            output[:, columns] = values
    return RollingZ(*outputs)


def fixed_zscore(
    log_y: np.ndarray,
    log_x: np.ndarray,
    hedge_ratio: float | np.ndarray,
    intercept: float | np.ndarray,
    mean: float | np.ndarray,
    std: float | np.ndarray,
) -> np.ndarray:
    """``(log y - intercept - hedge_ratio * log x - mean) / std`` with coefficients fixed per pair (in-sample).

    Columns of (T, M) inputs broadcast against (M,) coefficients. Uses whatever the coefficients were fitted on,
    so on the formation window itself it looks ahead by design.
    """
    log_y = np.asarray(log_y, dtype=np.float64)
    log_x = np.asarray(log_x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (log_y - intercept - np.asarray(hedge_ratio) * log_x - mean) / np.asarray(std, dtype=np.float64)
    return np.where(np.isfinite(z), z, np.nan)
