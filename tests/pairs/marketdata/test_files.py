"""Reading candle files: formats, time columns, picking files by symbol, and clear errors naming the file."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from pairs.marketdata.files import CandleFileError, candle_files, read_candle_file, symbol_of

T0 = 1_609_459_200_000  # 2021-01-01T00:00:00Z
H = 3_600_000
COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]


def sample() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": [T0, T0 + H, T0 + 2 * H],
            "open": [100.0, 100.5, 0.00012345],
            "high": [101.0, 102.25, 0.0002],
            "low": [99.5, 100.0, 0.0001],
            "close": [100.5, 101.75, 0.00015],
            "volume": [12.5, 0.0, 123456789.125],
        }
    )


def assert_sample(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == COLUMNS
    assert frame["timestamp"].tolist() == [T0, T0 + H, T0 + 2 * H]
    assert frame["open"].tolist() == [100.0, 100.5, 0.00012345]
    assert frame["close"].tolist() == [100.5, 101.75, 0.00015]
    assert frame["volume"].tolist() == [12.5, 0.0, 123456789.125]


# ---------------------------------------------------------------------------------------------------- formats


def test_csv(tmp_path):
    path = tmp_path / "BTCUSDT.csv"
    sample().to_csv(path, index=False)
    assert_sample(read_candle_file(path))


def test_gzip_csv(tmp_path):
    path = tmp_path / "BTCUSDT.csv.gz"
    sample().to_csv(path, index=False, compression="gzip")
    with gzip.open(path) as fh:  # really gzip, not a plain file with a .gz name
        assert fh.read(9) == b"timestamp"
    assert_sample(read_candle_file(path))


def test_parquet(tmp_path):
    path = tmp_path / "BTCUSDT.parquet"
    sample().to_parquet(path, index=False)
    assert_sample(read_candle_file(path))


def test_feather(tmp_path):
    path = tmp_path / "BTCUSDT.feather"
    sample().to_feather(path)
    assert_sample(read_candle_file(path))


def test_extra_columns_are_dropped_and_names_are_case_insensitive(tmp_path):
    df = sample().rename(columns=str.upper)
    df.insert(1, "datetime_utc", ["2021-01-01T00:00:00Z", "2021-01-01T01:00:00Z", "2021-01-01T02:00:00Z"])
    df["trades"] = [1, 2, 3]
    path = tmp_path / "BTCUSDT.csv"
    df.to_csv(path, index=False)

    frame = read_candle_file(path)

    assert_sample(frame)  # the numeric timestamp column wins over datetime_utc


def test_rows_keep_file_order(tmp_path):
    path = tmp_path / "BTCUSDT.csv"
    sample().iloc[[2, 0, 1]].to_csv(path, index=False)
    assert read_candle_file(path)["timestamp"].tolist() == [T0 + 2 * H, T0, T0 + H]


# ---------------------------------------------------------------------------------------------------- time columns


def test_freqtrade_date_column_in_csv(tmp_path):
    df = sample().drop(columns=["timestamp"])
    df.insert(0, "date", ["2021-01-01 00:00:00+00:00", "2021-01-01 01:00:00+00:00", "2021-01-01 02:00:00+00:00"])
    path = tmp_path / "BTCUSDT.csv"
    df.to_csv(path, index=False)

    assert_sample(read_candle_file(path))


def test_freqtrade_feather_with_a_datetime_date_column(tmp_path):
    df = sample().drop(columns=["timestamp"])
    df.insert(0, "date", pd.to_datetime([T0, T0 + H, T0 + 2 * H], unit="ms", utc=True))
    path = tmp_path / "BTC_USDT-1h.feather"
    df.to_feather(path)

    assert_sample(read_candle_file(path))


def test_naive_datetimes_are_taken_as_utc(tmp_path):
    df = sample().drop(columns=["timestamp"])
    df.insert(0, "open_time", ["2021-01-01 00:00:00", "2021-01-01 01:00:00", "2021-01-01 02:00:00"])
    path = tmp_path / "BTCUSDT.csv"
    df.to_csv(path, index=False)

    assert read_candle_file(path)["timestamp"].tolist() == [T0, T0 + H, T0 + 2 * H]


def test_iso_text_in_the_timestamp_column(tmp_path):
    df = sample()
    df["timestamp"] = ["2021-01-01T00:00:00Z", "2021-01-01T01:00:00Z", "2021-01-01T02:00:00Z"]
    path = tmp_path / "BTCUSDT.csv"
    df.to_csv(path, index=False)

    assert read_candle_file(path)["timestamp"].tolist() == [T0, T0 + H, T0 + 2 * H]


def test_unreadable_time_names_the_file_and_row(tmp_path):
    df = sample().drop(columns=["timestamp"])
    df.insert(0, "date", ["2021-01-01 00:00:00", "not a date", "2021-01-01 02:00:00"])
    path = tmp_path / "BTCUSDT.csv"
    df.to_csv(path, index=False)

    with pytest.raises(CandleFileError) as info:
        read_candle_file(path)

    assert str(path) in str(info.value)
    assert "row 2: unreadable time 'not a date'" in str(info.value)


# ---------------------------------------------------------------------------------------------------- bad files


def test_missing_column_names_the_file(tmp_path):
    path = tmp_path / "BTCUSDT.csv"
    sample().drop(columns=["volume"]).to_csv(path, index=False)

    with pytest.raises(CandleFileError) as info:
        read_candle_file(path)

    assert str(info.value) == f"{path}: missing column(s) volume"


def test_missing_time_column_names_the_file(tmp_path):
    path = tmp_path / "BTCUSDT.parquet"
    sample().drop(columns=["timestamp"]).to_parquet(path, index=False)

    with pytest.raises(CandleFileError) as info:
        read_candle_file(path)

    assert str(info.value).startswith(f"{path}: no time column")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("BTCUSDT.parquet", b"this is not parquet at all"),
        ("BTCUSDT.feather", b"nor feather"),
        ("BTCUSDT.csv.gz", b"plain text with a .gz name"),
        ("BTCUSDT.csv", b""),
    ],
)
def test_unreadable_file_names_the_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)

    with pytest.raises(CandleFileError) as info:
        read_candle_file(path)

    assert str(info.value).startswith(f"{path}: cannot be read: ")


def test_truncated_gzip_names_the_file_and_says_it_is_truncated(shared_candles_dir, tmp_path):
    whole = (shared_candles_dir / "BTCUSDT.csv.gz").read_bytes()
    path = tmp_path / "BTCUSDT.csv.gz"
    path.write_bytes(whole[: len(whole) // 2])  # a download cut off halfway

    with pytest.raises(CandleFileError) as info:
        read_candle_file(path)

    assert str(info.value) == (
        f"{path}: cannot be read: Compressed file ended before the end-of-stream marker was reached "
        "(the file is truncated or corrupt)"
    )


def test_corrupt_gzip_names_the_file(tmp_path):
    data = bytearray(gzip.compress(sample().to_csv(index=False).encode() * 50))
    data[40:60] = bytes(b ^ 0x55 for b in data[40:60])  # damaged in the middle of the deflate stream
    path = tmp_path / "BTCUSDT.csv.gz"
    path.write_bytes(bytes(data))

    with pytest.raises(CandleFileError) as info:
        read_candle_file(path)

    assert str(info.value).startswith(f"{path}: cannot be read: ")
    assert str(info.value).endswith("(the file is truncated or corrupt)")


def test_truncated_parquet_names_the_file(tmp_path):
    whole_path = tmp_path / "whole.parquet"
    sample().to_parquet(whole_path, index=False)
    whole = whole_path.read_bytes()
    path = tmp_path / "BTCUSDT.parquet"
    path.write_bytes(whole[: len(whole) // 2])

    with pytest.raises(CandleFileError) as info:
        read_candle_file(path)

    assert str(info.value).startswith(f"{path}: cannot be read: ")


def test_file_that_does_not_exist(tmp_path):
    path = tmp_path / "BTCUSDT.csv"
    with pytest.raises(CandleFileError, match="cannot be read") as info:
        read_candle_file(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------------- picking files


@pytest.fixture
def candle_dir(tmp_path) -> Path:
    sample().to_csv(tmp_path / "BTCUSDT.csv", index=False)
    sample().to_csv(tmp_path / "ethusdt.csv.gz", index=False, compression="gzip")
    sample().to_parquet(tmp_path / "SOLUSDT.parquet", index=False)
    sample().to_feather(tmp_path / "XRPUSDT.feather")
    (tmp_path / "README.md").write_text("not candles")
    (tmp_path / "nested.csv").mkdir()  # a directory with a candle-like name is not a file
    return tmp_path


def test_candle_files_finds_every_candle_file(candle_dir):
    files = candle_files(candle_dir)

    assert files == {
        "BTCUSDT": candle_dir / "BTCUSDT.csv",
        "ETHUSDT": candle_dir / "ethusdt.csv.gz",
        "SOLUSDT": candle_dir / "SOLUSDT.parquet",
        "XRPUSDT": candle_dir / "XRPUSDT.feather",
    }


def test_candle_files_symbols_subset_in_the_order_asked(candle_dir):
    files = candle_files(candle_dir, ["solusdt", " ETHUSDT ", ""])

    assert list(files) == ["SOLUSDT", "ETHUSDT"]
    assert files["ETHUSDT"] == candle_dir / "ethusdt.csv.gz"


def test_candle_files_missing_symbol_is_an_error(candle_dir):
    with pytest.raises(CandleFileError) as info:
        candle_files(candle_dir, ["BTCUSDT", "DOGEUSDT", "ADAUSDT"])

    assert str(info.value) == f"{candle_dir}: no file for symbol(s) DOGEUSDT, ADAUSDT"


def test_candle_files_missing_directory(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(CandleFileError, match="no such directory") as info:
        candle_files(missing)
    assert str(missing) in str(info.value)


def test_symbol_of():
    assert symbol_of(Path("/x/btcusdt.CSV.GZ")) == "BTCUSDT"
    assert symbol_of(Path("ETHUSDT.parquet")) == "ETHUSDT"
    with pytest.raises(CandleFileError, match="not a candle file"):
        symbol_of(Path("BTCUSDT.json"))


# ---------------------------------------------------------------------------------------------------- real data


def test_real_shared_directory(shared_candles_dir):
    files = candle_files(shared_candles_dir)
    assert len(files) == 126  # every .csv.gz; SOURCE.md is not a candle file
    assert files["BTCUSDT"].name == "BTCUSDT.csv.gz"

    frame = read_candle_file(files["BTCUSDT"])

    assert list(frame.columns) == COLUMNS
    assert len(frame) == 5482
    assert frame.iloc[0].tolist() == [1_606_780_800_000, 19695.87, 19720.0, 19479.8, 19565.47, 4570.361518]


def test_two_files_for_one_symbol_is_an_error_naming_both(candle_dir):
    # Which one holds the symbol's bars can't be guessed: the first in name order was silently taken.
    sample().to_csv(candle_dir / "btcusdt.csv", index=False)
    with pytest.raises(CandleFileError) as info:
        candle_files(candle_dir)
    assert str(info.value) == (f"{candle_dir}: more than one file for the same symbol, keep one: "
                               "BTCUSDT: BTCUSDT.csv, btcusdt.csv")


# ---------------------------------------------------------------------------------------------------- symbol column


def test_a_symbol_column_naming_another_symbol_is_rejected_with_its_rows(tmp_path):
    df = sample()
    df.insert(0, "symbol", ["BTCUSDT", "ETHUSDT", "ETHUSDT"])
    path = tmp_path / "BTCUSDT.csv"
    df.to_csv(path, index=False)

    with pytest.raises(CandleFileError) as info:
        read_candle_file(path)

    assert str(info.value) == (
        f"{path}: column symbol names another symbol than the file's BTCUSDT in 2 row(s): "
        "row 2 (file line 3): 'ETHUSDT', row 3 (file line 4): 'ETHUSDT' (one file holds one symbol)"
    )


def test_a_symbol_column_of_the_files_own_symbol_is_accepted_in_any_spelling(tmp_path):
    df = sample()
    df.insert(0, "Pair", ["BTCUSDT", "BTC/USDT", "btc/usdt:usdt"])
    path = tmp_path / "BTCUSDT.csv"
    df.to_csv(path, index=False)

    assert_sample(read_candle_file(path))


def test_an_empty_symbol_cell_is_rejected(tmp_path):
    df = sample()
    df.insert(0, "symbol", ["BTCUSDT", None, "BTCUSDT"])
    path = tmp_path / "BTCUSDT.parquet"
    df.to_parquet(path, index=False)

    with pytest.raises(CandleFileError, match=r"in 1 row\(s\): row 2 \(file line 3\): empty"):
        read_candle_file(path)


@pytest.mark.parametrize("suffix", [".parquet", ".feather"])
def test_epoch_ms_stored_as_text_are_read_as_numbers(tmp_path, suffix):
    # A string column of epoch ms was parsed as dates: "row 1: unreadable time '1609459200000'".
    df = sample()
    df["timestamp"] = df["timestamp"].astype(str)
    path = tmp_path / f"BTCUSDT{suffix}"
    getattr(df, f"to_{suffix[1:]}")(path)

    assert_sample(read_candle_file(path))


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_a_csv_delimited_otherwise_than_by_commas_says_so(tmp_path, delimiter):
    path = tmp_path / "BTCUSDT.csv"
    sample().to_csv(path, index=False, sep=delimiter)

    with pytest.raises(CandleFileError) as info:
        read_candle_file(path)

    header = delimiter.join(COLUMNS)
    assert str(info.value) == (
        f"{path}: no time column (one of timestamp, date, datetime_utc, open_time, datetime) (its header {header!r} "
        f"is one column: the file looks delimited by {delimiter!r}, and a CSV file is delimited by commas)"
    )
