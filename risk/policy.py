"""The guard's policy: which checks exist, what each may do when it fires, and the limits an account trades under.

Pure: no queries. An account's effective limits are the strictest of its own row and the system-wide row, so a
system-wide limit can't be loosened by an account's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from functools import reduce
from typing import Any

# What a check may do, mildest first (the order decides which of two actions is the stricter).
NOTIFY, PAUSE_PAIR, REDUCE, HALT, HALT_FLATTEN = "notify", "pause_pair", "reduce", "halt", "halt_flatten"
ACTIONS = (NOTIFY, PAUSE_PAIR, REDUCE, HALT, HALT_FLATTEN)

# Checks that concern one pair trade may pause that pair; the others act on the whole account.
PAIR_CHECKS = frozenset({"one_leg", "leg_imbalance", "slippage"})

DEFAULT_ACTIONS: dict[str, str] = {
    "daily_loss": HALT,
    "drawdown": HALT,
    "consecutive_losses": REDUCE,
    "open_trades": REDUCE,
    "gross_exposure": REDUCE,
    "stale_data": REDUCE,
    "heartbeat": NOTIFY,
    "position_mismatch": HALT,
    "one_leg": HALT,
    "leg_imbalance": PAUSE_PAIR,
    "error_burst": REDUCE,
    "slippage": NOTIFY,
    "balance": HALT,
    "queue": NOTIFY,
}
CHECKS = tuple(DEFAULT_ACTIONS)

# Daily limits latch until the next UTC midnight, consecutive losses for a cooldown; the rest until a person clears.
DAILY_CHECKS = frozenset({"daily_loss"})

# RiskLimit fields: (name, which is stricter). "min": the smaller limit is stricter.
LIMIT_FIELDS = (
    "daily_loss_limit", "daily_loss_limit_pct", "max_drawdown_pct", "max_open_trades", "max_gross_exposure",
    "max_consecutive_losses", "max_pair_notional", "consecutive_losses_cooldown_minutes", "stale_data_minutes",
    "heartbeat_stale_seconds", "one_leg_seconds", "leg_imbalance_pct", "error_burst_count", "slippage_bps",
    "balance_tolerance_pct", "queue_max_length",
)
# A longer window makes a burst easier to reach, a longer cooldown holds longer: larger is stricter.
LARGER_IS_STRICTER = frozenset({"error_burst_minutes", "consecutive_losses_cooldown_minutes"})


def actions_problems(actions: Any) -> list[str]:
    """What is wrong with an ``actions`` mapping, in words (empty when it is right)."""
    if not isinstance(actions, dict):
        return ["actions must be a mapping of check name to action"]
    problems = []
    for check, action in actions.items():
        if check not in DEFAULT_ACTIONS:
            problems.append(f"unknown check {check!r} (known: {', '.join(CHECKS)})")
        elif action not in ACTIONS:
            problems.append(f"unknown action {action!r} for {check} (known: {', '.join(ACTIONS)})")
        elif action == PAUSE_PAIR and check not in PAIR_CHECKS:
            problems.append(f"{check} concerns the whole account and can't pause one pair")
    return problems


def stricter_action(a: str, b: str) -> str:
    return a if ACTIONS.index(a) >= ACTIONS.index(b) else b


@dataclass(frozen=True)
class Limits:
    """The limits one account trades under (None: no limit / detector off) and each check's action."""

    daily_loss_limit: Decimal | None = None
    daily_loss_limit_pct: float | None = None
    max_drawdown_pct: float | None = None
    max_open_trades: int | None = None
    max_gross_exposure: Decimal | None = None
    max_consecutive_losses: int | None = None
    max_pair_notional: Decimal | None = None
    consecutive_losses_cooldown_minutes: int | None = None
    stale_data_minutes: int | None = None
    heartbeat_stale_seconds: int | None = None
    one_leg_seconds: int | None = None
    leg_imbalance_pct: float | None = None
    error_burst_count: int | None = None
    error_burst_minutes: int = 10
    slippage_bps: float | None = None
    balance_tolerance_pct: float | None = None
    queue_max_length: int | None = None
    actions: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ACTIONS))

    def action(self, check: str) -> str:
        return self.actions.get(check, DEFAULT_ACTIONS[check])


def merge_limits(rows: list[Any]) -> Limits:
    """The strictest of the given RiskLimit rows (or any objects with the same attributes), field by field."""
    values: dict[str, Any] = {}
    for row in rows:
        for name in (*LIMIT_FIELDS, "error_burst_minutes"):
            value = getattr(row, name, None)
            if value is None:
                continue
            current = values.get(name)
            if current is None:
                values[name] = value
            elif name == "consecutive_losses_cooldown_minutes" and 0 in (current, value):
                values[name] = 0  # 0 holds until a person clears it: the strictest cooldown
            elif name in LARGER_IS_STRICTER:
                values[name] = max(current, value)
            else:
                values[name] = min(current, value)
    values.setdefault("error_burst_minutes", 10)
    return Limits(**values, actions=merge_actions(rows))


def merge_actions(rows: list[Any]) -> dict[str, str]:
    """Each check's strictest action over the rows, a row that names none for a check counting as its default, so
    an account row's explicit milder action can't loosen the system-wide row's default (e.g. daily_loss: halt)."""
    if not rows:
        return dict(DEFAULT_ACTIONS)
    return {check: reduce(stricter_action, (_row_action(row, check) for row in rows)) for check in CHECKS}


def _row_action(row: Any, check: str) -> str:
    action = (getattr(row, "actions", None) or {}).get(check)
    # An unknown action (the model's clean() refuses it; a row written around it) counts as the default.
    return action if action in ACTIONS else DEFAULT_ACTIONS[check]
