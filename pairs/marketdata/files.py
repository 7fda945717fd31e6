"""Reading candle files: one file per symbol, named like BTCUSDT.csv.gz. Pure: pandas only.

Formats: CSV (optionally gzip), Parquet, Feather. The time column is ``timestamp`` (epoch ms), or ``date`` /
``datetime_utc`` / ``open_time`` (datetimes, as freqtrade writes them); then open, high, low, close, volume.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import pandas as pd

SUFFIXES = (".csv.gz", ".csv", ".parquet", ".feather")
_TIME_COLUMNS = ("timestamp", "date", "datetime_utc", "open_time", "datetime")
# A column naming each row's symbol, as some exports carry: every row must be the file's own symbol.
_SYMBOL_COLUMNS = ("symbol", "pair", "ticker")
# What the readers raise on a damaged file: a truncated gzip ends in EOFError, a corrupt deflate stream in
# zlib.error, a broken CSV in ParserError or UnicodeDecodeError (a ValueError), a broken Parquet or Feather in
# pyarrow's errors (each also a ValueError, OSError, TypeError, NotImplementedError or LookupError).
READ_ERRORS = (OSError, ValueError, EOFError, zlib.error, TypeError, NotImplementedError, LookupError)
_DAMAGED = (EOFError, zlib.error)


class CandleFileError(ValueError):
    pass


def symbol_of(path: Path) -> str:
    name = path.name
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)].upper()
    raise CandleFileError(f"{path}: not a candle file (expected one of {', '.join(SUFFIXES)})")


def candle_files(directory: Path, symbols: list[str] | None = None) -> dict[str, Path]:
    """Symbol -> file for every candle file in ``directory`` (or just ``symbols``, each of which must exist)."""
    if not directory.is_dir():
        raise CandleFileError(f"{directory}: no such directory")
    found: dict[str, Path] = {}
    twice: dict[str, list[str]] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.name.lower().endswith(SUFFIXES):
            symbol = symbol_of(path)
            if symbol in found:
                twice.setdefault(symbol, [found[symbol].name]).append(path.name)
            found.setdefault(symbol, path)
    if twice:
        # Which one holds the symbol's bars can't be guessed (BTCUSDT.csv and btcusdt.parquet): nothing is imported.
        raise CandleFileError(f"{directory}: more than one file for the same symbol, keep one: " + "; ".join(
            f"{symbol}: {', '.join(names)}" for symbol, names in sorted(twice.items())))
    if symbols is None:
        return found
    wanted = [s.strip().upper() for s in symbols if s.strip()]
    missing = [s for s in wanted if s not in found]
    if missing:
        raise CandleFileError(f"{directory}: no file for symbol(s) {', '.join(missing)}")
    return {s: found[s] for s in wanted}


def read_candle_file(path: Path) -> pd.DataFrame:
    """A frame with columns timestamp (epoch ms), open, high, low, close, volume, in file order."""
    frame = _read_table(path)
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    _timestamps_in_ms(path, frame)
    missing = [c for c in ("open", "high", "low", "close", "volume") if c not in frame.columns]
    if missing:
        raise CandleFileError(f"{path}: missing column(s) {', '.join(missing)}")
    _check_symbol_column(path, frame)
    return frame[["timestamp", "open", "high", "low", "close", "volume"]]


def _read_table(path: Path) -> pd.DataFrame:
    """The file as the reader of its format gives it; CandleFileError naming the file when it can't be read."""
    name = path.name.lower()
    try:
        if name.endswith((".csv", ".csv.gz")):
            return pd.read_csv(path, compression="infer")
        if name.endswith(".parquet"):
            return pd.read_parquet(path)
        if name.endswith(".feather"):
            return pd.read_feather(path)
    except READ_ERRORS as exc:
        damaged = " (the file is truncated or corrupt)" if isinstance(exc, _DAMAGED) else ""
        raise CandleFileError(f"{path}: cannot be read: {exc}{damaged}") from exc
    raise CandleFileError(f"{path}: unsupported format")


def _timestamps_in_ms(path: Path, frame: pd.DataFrame) -> None:
    """Set the frame's ``timestamp`` column to epoch ms, from whichever time column it has."""
    time_column = next((c for c in _TIME_COLUMNS if c in frame.columns), None)
    if time_column is None:
        header = frame.columns[0] if len(frame.columns) == 1 else ""
        delimiter = next((d for d in (";", "\t", "|") if d in header), None)
        hint = f" (its header {header!r} is one column: the file looks delimited by {delimiter!r}, and a CSV " \
               "file is delimited by commas)" if delimiter else ""
        raise CandleFileError(f"{path}: no time column (one of {', '.join(_TIME_COLUMNS)}){hint}")
    if time_column == "timestamp" and not pd.api.types.is_numeric_dtype(frame[time_column]):
        # Epoch ms written as text (a Parquet or Feather string column): numbers, not dates to guess at.
        numbers = pd.to_numeric(frame[time_column], errors="coerce")
        if numbers.notna().all():
            frame[time_column] = numbers
    if time_column != "timestamp" or not pd.api.types.is_numeric_dtype(frame[time_column]):
        times = pd.to_datetime(frame[time_column], utc=True, errors="coerce")
        if times.isna().any():
            row = int(times.isna().to_numpy().nonzero()[0][0]) + 1
            raise CandleFileError(f"{path}: row {row}: unreadable time {frame[time_column].iloc[row - 1]!r}")
        frame["timestamp"] = times.astype("datetime64[ms, UTC]").astype("int64")


def _bare_symbol(name) -> str:
    """BTCUSDT for BTCUSDT, btc/usdt, BTC/USDT:USDT or BTC-USDT: the exchange's id as the file names carry it."""
    text = "" if pd.isna(name) else str(name)
    return "".join(ch for ch in text.split(":")[0].upper() if ch not in "/-_ ")


def _check_symbol_column(path: Path, frame: pd.DataFrame) -> None:
    """A file whose symbol column names another symbol (two exports concatenated, a file renamed) would store that
    symbol's prices as the file's: rejected, naming the rows."""
    column = next((c for c in _SYMBOL_COLUMNS if c in frame.columns), None)
    if column is None:
        return
    own = symbol_of(path)
    foreign = [r for r, name in enumerate(frame[column]) if _bare_symbol(name) != own]
    if foreign:
        cells = frame[column]
        shown = ", ".join(
            f"row {r + 1} (file line {r + 2}): {'empty' if pd.isna(cells.iloc[r]) else repr(cells.iloc[r])}"
            for r in foreign[:5]
        )
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        raise CandleFileError(
            f"{path}: column {column} names another symbol than the file's {own} in {len(foreign)} row(s): "
            f"{shown}{more} (one file holds one symbol)"
        )
