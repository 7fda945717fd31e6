"""The execution model: when a decision fills and at what price. Pure: numpy only, no Django, no ccxt.

One model for the vectorised backtest (``pairs.quant.backtest``), the replay and paper trading (the paper exchange,
``execution.paper``), so that their costs cannot drift apart:

- **Timing**: a decision taken on bar t (the rule reads bar t's close, so it is known at bar t's close time) fills
  at the open of bar ``t + 1 + execution_delay_bars``: the first price after the signal is known when only bars
  are stored. ``execution_delay_bars = 0`` is the next bar's open; 1 waits one more bar (a slow executor).
- **Slippage**: a fraction of the fill's notional, against the taker (a buy pays ``open * (1 + s)``, a sell gets
  ``open * (1 - s)``), made of a fixed part and a variable part read off the *reference bar*: the last bar closed
  at the fill time (bar ``t + execution_delay_bars``). Not the fill bar itself: its range and volume are not known
  yet when a live order fills, and the backtest must not charge with what the live exchange couldn't know.
  ``s = fixed + factor * variable`` with ``variable`` by ``model``:

  * ``"range"``: ``(high - low) / open`` of the reference bar (its relative range: volatile bars cost more);
  * ``"volume"``: ``reference_notional / turnover`` of the reference bar (the fill's share of the bar's quote
    volume, with a fixed order size ``reference_notional`` so that the backtest, whose trades have no size in
    money, charges what the replay charges).

  A variable part that cannot be computed (a missing bar, an unknown turnover, a non-positive value) counts 0: the
  fixed part remains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SLIPPAGE_MODELS = ("range", "volume")
# A delay longer than a day of hourly bars is a typo, not an execution model.
MAX_EXECUTION_DELAY_BARS = 24


@dataclass(frozen=True)
class SlippageModel:
    """``fixed + factor * variable`` per fill, as a fraction of its notional (module docstring)."""

    fixed: float = 0.0002
    model: str = "range"
    factor: float = 0.0
    reference_notional: float = 500.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fixed) and 0 <= self.fixed < 1):
            raise ValueError(f"the fixed slippage must be a fraction in [0, 1), got {self.fixed!r}")
        if self.model not in SLIPPAGE_MODELS:
            raise ValueError(f"slippage model {self.model!r} is not one of {', '.join(SLIPPAGE_MODELS)}")
        if not (math.isfinite(self.factor) and self.factor >= 0):
            raise ValueError(f"the slippage factor must be a finite number >= 0, got {self.factor!r}")
        if not (math.isfinite(self.reference_notional) and self.reference_notional > 0):
            raise ValueError(f"the slippage reference notional must be positive, got {self.reference_notional!r}")

    def fraction(self, open_, high, low, turnover) -> np.ndarray:
        """The slippage fraction of a fill whose reference bar has these values (arrays broadcast; NaN allowed)."""
        return self.fixed + self.variable(open_, high, low, turnover)

    def variable(self, open_, high, low, turnover) -> np.ndarray:
        """The variable part alone: ``factor`` times the model's variable (0 where it can't be computed)."""
        shape = np.shape(open_)
        if self.factor == 0:
            return np.zeros(shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.model == "range":
                value = (np.asarray(high, dtype=np.float64) - np.asarray(low, dtype=np.float64)) / np.asarray(
                    open_, dtype=np.float64)
            else:
                value = self.reference_notional / np.asarray(turnover, dtype=np.float64)
        value = np.broadcast_to(value, shape)
        return self.factor * np.where(np.isfinite(value) & (value > 0), value, 0.0)


def check_delay(execution_delay_bars: int) -> int:
    """The delay as an int; ValueError unless it is an integer in [0, MAX_EXECUTION_DELAY_BARS]."""
    if int(execution_delay_bars) != execution_delay_bars or not 0 <= execution_delay_bars <= MAX_EXECUTION_DELAY_BARS:
        raise ValueError(
            f"execution_delay_bars must be an integer from 0 to {MAX_EXECUTION_DELAY_BARS}, "
            f"got {execution_delay_bars!r}"
        )
    return int(execution_delay_bars)


def previous_closes(closes: np.ndarray) -> np.ndarray:
    """Opens where none are stored: each bar opens at the previous bar's close (the first at its own close). On a
    market that trades around the clock the next open is the previous close to within a tick."""
    closes = np.asarray(closes, dtype=np.float64)
    opens = np.empty_like(closes)
    if len(closes):
        opens[0] = closes[0]
        opens[1:] = closes[:-1]
    return opens


def fill_opens(opens, closes: np.ndarray) -> np.ndarray:
    """``opens`` with each missing (NaN) open replaced by the previous bar's close (``previous_closes``)."""
    fallback = previous_closes(closes)
    if opens is None:
        return fallback
    opens = np.asarray(opens, dtype=np.float64)
    return np.where(np.isfinite(opens) & (opens > 0), opens, fallback)
