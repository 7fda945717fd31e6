"""Validation of OHLCV candles before anything is stored. Pure: pandas and numpy only.

Every path that brings candles in (exchange fetch, file import) passes through ``validate_candles``. The rules:

| problem | rule |
|---|---|
| unsorted timestamps | repaired: sorted |
| duplicate timestamp, identical rows | repaired: one kept |
| duplicate timestamp, different values | rejected: which one is right can't be known |
| timestamp not an integer of ms, or outside 1970..9999 | rejected |
| timestamp off the timeframe grid | rejected: the source is not of this timeframe |
| timestamp in the future (open time > now + 60 s) | rejected: clock or data error |
| timestamp up to 60 s ahead of now (the exchange's clock a little ahead at a bar's start) | as unclosed, below |
| bar not closed yet (open time + timeframe > now) | repaired: dropped, it will be fetched again once closed |
| NaN or non-positive open/high/low/close | rejected |
| high below low, or open/close outside [low, high] | rejected |
| NaN or negative volume | rejected |
| a price below 1e-12 or any value of 1e20 or more | rejected: outside what the database stores exactly |
| gaps (missing bars) | reported, not filled: storage keeps what the source had; the screen forward-fills on its grid |

A rejected batch raises ``CandleValidationError`` listing every problem with symbol and timestamp, and nothing of it
is stored. Repairs and gaps are reported in the returned ``ValidationReport``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where candles are validated: timeframe_ms is on every command's start-up path (#18)
    import pandas as pd

TIMEFRAME_MS: dict[str, int] = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
}
OHLCV_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")
VALUE_COLUMNS = (*PRICE_COLUMNS, "volume")
# The database keeps 12 digits after the point and 32 in all (core.db).
MIN_STORABLE_PRICE = 1e-12
MAX_STORABLE_VALUE = 1e20
# A report lists this many examples per kind of problem; the counts are always complete.
MAX_EXAMPLES = 10
# Open times a candle may have, in epoch ms: 1970-01-01 to 9999-12-31 (what datetime and the database can hold).
MAX_TIMESTAMP_MS = 253_402_300_799_999
# Epoch seconds of any date up to 5138 read as milliseconds before 1973-03-03: no market data of ours is that old.
SECONDS_LOOK_BELOW_MS = 100_000_000_000


class CandleValidationError(ValueError):
    """A batch of candles that must not be stored; ``problems`` names each with its timestamp."""

    def __init__(self, symbol: str, problems: list[str]):
        self.symbol = symbol
        self.problems = problems
        shown = "\n  ".join(problems[: MAX_EXAMPLES * 3])
        more = f"\n  ... and {len(problems) - MAX_EXAMPLES * 3} more" if len(problems) > MAX_EXAMPLES * 3 else ""
        super().__init__(f"{symbol}: candles rejected:\n  {shown}{more}")


@dataclass
class ValidationReport:
    symbol: str
    rows_in: int = 0
    rows_out: int = 0
    duplicates_dropped: int = 0
    was_unsorted: bool = False
    unclosed_dropped: int = 0
    gaps: int = 0
    missing_bars: int = 0
    gap_examples: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.symbol}: {self.rows_out} bars"]
        if self.was_unsorted:
            parts.append("sorted")
        if self.duplicates_dropped:
            parts.append(f"{self.duplicates_dropped} duplicate(s) dropped")
        if self.unclosed_dropped:
            parts.append(f"{self.unclosed_dropped} unclosed bar(s) dropped")
        if self.gaps:
            first = ", ".join(self.gap_examples[:3])
            parts.append(f"{self.gaps} gap(s), {self.missing_bars} missing bar(s) (first: {first})")
        return "; ".join(parts)


def timeframe_ms(timeframe: str) -> int:
    try:
        return TIMEFRAME_MS[timeframe]
    except KeyError:
        raise ValueError(f"unknown timeframe {timeframe!r}; known: {', '.join(TIMEFRAME_MS)}") from None


def _iso(ms: int | np.integer) -> str:
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _examples(label: str, timestamps: np.ndarray, details: list[str] | None = None) -> list[str]:
    shown = [f"{label} at {_iso(ts)}" + (f" ({details[i]})" if details else "")
             for i, ts in enumerate(timestamps[:MAX_EXAMPLES])]
    if len(timestamps) > MAX_EXAMPLES:
        shown.append(f"{label}: {len(timestamps) - MAX_EXAMPLES} more")
    return shown


def validate_candles(
    frame: pd.DataFrame, *, symbol: str, timeframe: str, now_ms: int | None = None
) -> tuple[pd.DataFrame, ValidationReport]:
    """Check and repair a frame with columns timestamp (ms, int), open, high, low, close, volume.

    Returns the clean frame (sorted, unique timestamps, int64 timestamps, float64 values; the original text of
    the numbers is the caller's to keep if it needs exact decimals) and the report. Raises CandleValidationError.
    """
    step = timeframe_ms(timeframe)
    missing = [c for c in OHLCV_COLUMNS if c not in frame.columns]
    if missing:
        raise CandleValidationError(symbol, [f"missing column(s): {', '.join(missing)}"])
    report = ValidationReport(symbol=symbol, rows_in=len(frame))
    data = _numeric(frame, symbol)
    problems: list[str] = []
    data = _sorted_and_unique(data, report, problems)
    ts = data["timestamp"].to_numpy()
    now_ms = int(datetime.now(tz=UTC).timestamp() * 1000) if now_ms is None else now_ms
    problems.extend(_time_problems(ts, step, timeframe, now_ms))
    problems.extend(_value_problems(data, ts))
    if problems:
        raise CandleValidationError(symbol, problems)

    unclosed = ts + step > now_ms
    if unclosed.any():
        report.unclosed_dropped = int(unclosed.sum())
        data = data[~unclosed].reset_index(drop=True)
        ts = data["timestamp"].to_numpy()
    _report_gaps(report, ts, step)
    report.rows_out = len(data)
    return data, report


def _cell_text(value) -> str:
    """A cell as the file shows it: "empty" for a missing one, the text quoted, a number as written (not numpy's
    repr, np.float64(nan))."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "empty"
    return repr(value) if isinstance(value, str) else str(value)


def _numeric(frame: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """The OHLCV columns as numbers (int64 ms timestamps, float64 values; a bad value becomes NaN, checked later);
    a timestamp that is not an integer of ms rejects the batch at once."""
    import pandas as pd

    timestamps = pd.to_numeric(frame["timestamp"], errors="coerce")
    bad_ts = timestamps.isna() | (timestamps != timestamps.round())
    if bad_ts.any():
        rows = np.flatnonzero(bad_ts.to_numpy())[:MAX_EXAMPLES]
        raise CandleValidationError(
            symbol, [f"row {r + 1} (file line {r + 2}): timestamp {_cell_text(frame['timestamp'].iloc[r])} is not "
                     "an integer of ms" for r in rows]
        )
    out_of_range = (timestamps < 0) | (timestamps > MAX_TIMESTAMP_MS)
    if out_of_range.any():
        rows = np.flatnonzero(out_of_range.to_numpy())[:MAX_EXAMPLES]
        raise CandleValidationError(
            symbol, [f"row {r + 1}: timestamp {frame['timestamp'].iloc[r]} is outside 1970..9999 in epoch ms"
                     for r in rows],
        )  # fmt: skip
    data = frame.loc[:, list(OHLCV_COLUMNS)].copy()
    data["timestamp"] = timestamps.astype("int64")
    not_numbers: list[tuple[int, int, str]] = []
    for order, column in enumerate((*PRICE_COLUMNS, "volume")):
        values = pd.to_numeric(data[column], errors="coerce").astype("float64")
        # Text that is not a number ("1,000.5", "abc") is named with its row, column and value; an empty cell
        # stays NaN, rejected below with its timestamp.
        unreadable = np.flatnonzero((values.isna() & data[column].notna()).to_numpy())
        not_numbers.extend((r, order, f"row {r + 1} (file line {r + 2}): {column} "
                                      f"{_cell_text(data[column].iloc[r])} is not a number")
                           for r in unreadable[:MAX_EXAMPLES])
        data[column] = values
    if not_numbers:
        raise CandleValidationError(symbol, [text for _, _, text in sorted(not_numbers)])
    return data


def _sorted_and_unique(data: pd.DataFrame, report: ValidationReport, problems: list[str]) -> pd.DataFrame:
    """Sorted by time, one row per timestamp (identical duplicates dropped; conflicting ones are a problem)."""
    ts = data["timestamp"].to_numpy()
    if len(ts) > 1 and not (np.diff(ts) >= 0).all():
        report.was_unsorted = True
        data = data.sort_values("timestamp", kind="stable").reset_index(drop=True)
    duplicated = data["timestamp"].duplicated(keep=False)
    if duplicated.any():
        groups = data[duplicated].groupby("timestamp")
        conflicting = [t for t, g in groups if len(g.drop_duplicates()) > 1]
        if conflicting:
            problems.extend(_examples("duplicate timestamp with different values", np.array(conflicting)))
        before = len(data)
        data = data.drop_duplicates(subset="timestamp", keep="first").reset_index(drop=True)
        report.duplicates_dropped = before - len(data)
    return data


# An exchange whose clock runs a little ahead of ours answers, just after its bar boundary, with the bar it has just
# opened, whose open time is then a moment after our now: a bar that has not closed, not a data error (rejecting it
# failed the symbol's whole page for that run).
CLOCK_AHEAD_TOLERANCE_MS = 60_000


def _time_problems(ts: np.ndarray, step: int, timeframe: str, now_ms: int) -> list[str]:
    problems = []
    off_grid = ts % step != 0
    if off_grid.any():
        problems.extend(_examples(f"timestamp off the {timeframe} grid", ts[off_grid]))
        if ts.max() < SECONDS_LOOK_BELOW_MS:
            problems.append("every timestamp lies before 1973: they look like epoch seconds, and the column "
                            "takes epoch milliseconds (or ISO 8601 date-times in a date column)")
    future = ts > now_ms + CLOCK_AHEAD_TOLERANCE_MS
    if future.any():
        problems.extend(_examples("timestamp in the future", ts[future]))
    return problems


def _value_problems(data: pd.DataFrame, ts: np.ndarray) -> list[str]:
    """Prices that are NaN or not positive, bars whose high is below the low or whose open or close lies outside
    [low, high], bad volumes, and values the database can't store exactly: each with its first examples."""
    prices = data[list(PRICE_COLUMNS)].to_numpy()
    not_positive = ~(prices > 0).all(axis=1)  # also catches NaN
    high, low = data["high"].to_numpy(), data["low"].to_numpy()
    body_max = np.maximum(data["open"].to_numpy(), data["close"].to_numpy())
    body_min = np.minimum(data["open"].to_numpy(), data["close"].to_numpy())
    values = data[list(VALUE_COLUMNS)].to_numpy()
    with np.errstate(invalid="ignore"):
        inverted = (high < low) & ~not_positive
        outside = ((body_max > high) | (body_min < low)) & ~not_positive & ~inverted
        bad_volume = ~(data["volume"].to_numpy() >= 0)
        too_small = (prices < MIN_STORABLE_PRICE).any(axis=1) & ~not_positive
        out_of_range = too_small | (values >= MAX_STORABLE_VALUE).any(axis=1)
        is_price = np.array([c in PRICE_COLUMNS for c in VALUE_COLUMNS])
        # The cells each example names beside its timestamp: the column and the value that broke the rule.
        cells = (
            ("NaN or non-positive price", not_positive, ~(values > 0) & is_price),
            ("high below low", inverted, np.isin(VALUE_COLUMNS, ("high", "low"))),
            ("open or close outside [low, high]", outside, is_price),
            ("NaN or negative volume", bad_volume, ~(values >= 0) & ~is_price),
            ("value outside the stored range [1e-12, 1e20)", out_of_range,
             ((values < MIN_STORABLE_PRICE) & is_price) | (values >= MAX_STORABLE_VALUE)),
        )
    problems = []
    for label, rows, offending in cells:
        if rows.any():
            shown = np.flatnonzero(rows)[:MAX_EXAMPLES]
            details = [", ".join(f"{c} {_value_text(values[r, k])}" for k, c in enumerate(VALUE_COLUMNS)
                                 if np.broadcast_to(offending, values.shape)[r, k]) for r in shown]
            problems.extend(_examples(label, ts[rows], details))
    return problems


def _value_text(value: float) -> str:
    """A value as short as it reads back: 100 (not 100.0), 0.5, -1, NaN, inf, 1e+20."""
    if math.isnan(value):
        return "NaN"
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _report_gaps(report: ValidationReport, ts: np.ndarray, step: int) -> None:
    if len(ts) > 1:
        jumps = np.diff(ts) // step
        gap_positions = np.flatnonzero(jumps > 1)
        report.gaps = int(gap_positions.size)
        report.missing_bars = int((jumps[gap_positions] - 1).sum())
        report.gap_examples = [
            f"{_iso(ts[i] + step)}..{_iso(ts[i + 1] - step)}" for i in gap_positions[:MAX_EXAMPLES]
        ]
