"""Leg sizing of a pair trade: pure Decimal arithmetic, no Django, no exchange.

The spread is log(y) - beta * log(x), so one unit of it is held with notional N in y and |beta| * N in x (opposite
directions when beta > 0). The larger leg gets the whole per-leg budget; each quantity is rounded DOWN to its
instrument's step (never more than the budget), the other leg follows one rounded down far off its hedge, and both
are checked against the minimum quantity and notional and the hedge against ``MAX_HEDGE_ERROR``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

# An instrument without a known step (imported from files, never synced from the exchange) is sized to this many
# significant digits, which is finer than any exchange's step for the same notional.
DEFAULT_SIGNIFICANT_DIGITS = 6
# Rounding both legs down to their steps can leave the x leg's notional off its hedge (beta times y's): past 1 % the
# leg rounded down less is re-sized to the other's hedge; a pair still more than 5 % off is not traded (a spread
# held that far from its hedge is mostly a bet on one leg).
RESIZE_ABOVE = Decimal("0.01")
MAX_HEDGE_ERROR = Decimal("0.05")


@dataclass(frozen=True)
class LegFilters:
    qty_step: Decimal | None = None
    min_qty: Decimal | None = None
    max_qty: Decimal | None = None
    min_notional: Decimal | None = None


@dataclass(frozen=True)
class LegOrder:
    side: str  # "buy" / "sell"
    qty: Decimal
    price: Decimal

    @property
    def notional(self) -> Decimal:
        return self.qty * self.price


@dataclass(frozen=True)
class Sizing:
    y: LegOrder | None
    x: LegOrder | None
    reason: str = ""  # why it could not be sized; empty when both legs are set

    @property
    def ok(self) -> bool:
        return self.y is not None and self.x is not None

    @property
    def gross_notional(self) -> Decimal:
        return (self.y.notional if self.y else 0) + (self.x.notional if self.x else 0)


def round_down_to_step(qty: Decimal, step: Decimal | None) -> Decimal:
    if qty <= 0:
        return Decimal(0)
    if step is None or step <= 0:
        exponent = qty.adjusted() - (DEFAULT_SIGNIFICANT_DIGITS - 1)
        step = Decimal(1).scaleb(exponent)
    return (qty / step).to_integral_value(rounding=ROUND_DOWN) * step


def leg_sides(side: str, hedge_ratio: float) -> tuple[str, str]:
    """(y side, x side) of opening a ``long_spread`` / ``short_spread``: long spread buys y and sells beta x."""
    if side not in ("long_spread", "short_spread"):
        raise ValueError(f"side must be long_spread or short_spread, got {side!r}")
    y_side = "buy" if side == "long_spread" else "sell"
    opposite = "sell" if y_side == "buy" else "buy"
    return y_side, (opposite if hedge_ratio > 0 else y_side)


def size_pair_trade(
    *, side: str, hedge_ratio: float, budget_per_leg: Decimal, y_price: Decimal, x_price: Decimal,
    y_filters: LegFilters, x_filters: LegFilters,
) -> Sizing:
    """Quantities of both legs, or the reason they can't be traded (for the log and the tick report)."""
    if not (hedge_ratio == hedge_ratio) or hedge_ratio == 0 or abs(hedge_ratio) == float("inf"):
        return Sizing(None, None, f"hedge ratio {hedge_ratio} is not a usable number")
    if budget_per_leg <= 0:
        return Sizing(None, None, "the per-leg budget is zero")
    if y_price <= 0 or x_price <= 0:
        return Sizing(None, None, "no positive price for a leg")
    beta = Decimal(repr(abs(hedge_ratio)))
    y_notional = budget_per_leg / max(Decimal(1), beta)
    x_notional = y_notional * beta
    y_side, x_side = leg_sides(side, hedge_ratio)
    y_qty = round_down_to_step(y_notional / y_price, y_filters.qty_step)
    x_qty = round_down_to_step(x_notional / x_price, x_filters.qty_step)
    if y_qty > 0 and x_qty > 0 and _hedge_error(y_qty * y_price, x_qty * x_price, beta) > RESIZE_ABOVE:
        # A coarse step rounded one leg down by more than the other: the other follows it down to its hedge.
        if x_qty * x_price < y_qty * y_price * beta:
            y_qty = round_down_to_step(x_qty * x_price / beta / y_price, y_filters.qty_step)
        else:
            x_qty = round_down_to_step(y_qty * y_price * beta / x_price, x_filters.qty_step)
    legs = []
    for name, qty, notional, price, filters, leg_side in (
        ("y", y_qty, y_notional, y_price, y_filters, y_side),
        ("x", x_qty, x_notional, x_price, x_filters, x_side),
    ):
        if qty <= 0:
            return Sizing(None, None, f"{name} leg: {notional:.2f} of budget buys less than one step")
        if filters.min_qty is not None and qty < filters.min_qty:
            return Sizing(None, None, f"{name} leg: qty {qty} is below the minimum {filters.min_qty}")
        if filters.max_qty is not None and qty > filters.max_qty:
            return Sizing(None, None, f"{name} leg: qty {qty} is above the maximum {filters.max_qty}")
        if filters.min_notional is not None and qty * price < filters.min_notional:
            return Sizing(None, None, f"{name} leg: notional {qty * price:.4f} is below the minimum "
                                      f"{filters.min_notional}")
        legs.append(LegOrder(leg_side, qty, price))
    error = _hedge_error(legs[0].notional, legs[1].notional, beta)
    if error > MAX_HEDGE_ERROR:
        return Sizing(None, None, f"the steps leave a hedge of {legs[1].notional / legs[0].notional:.4f} instead of "
                                  f"{beta} ({error:.1%} off, at most {MAX_HEDGE_ERROR:.0%}): the budget is too small "
                                  "for these instruments' steps")
    return Sizing(legs[0], legs[1])


def _hedge_error(y_notional: Decimal, x_notional: Decimal, beta: Decimal) -> Decimal:
    """How far the legs' notional ratio is from the hedge ratio, as a fraction of it."""
    return abs(x_notional / y_notional - beta) / beta
