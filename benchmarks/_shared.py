"""Pieces every benchmark script needs: where the repo and the shared data are, loading the real closes, Django
set-up for a benchmark database, and peak memory. Heavy imports happen inside the functions, so a script can set
its BLAS thread variables before numpy loads."""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "binance-usdt-1h-2021"


def load_closes(data_dir: Path, *, full_history_only: bool = False):
    """Closes of the shared symbols on the full hourly grid, forward-filled (NaN before a listing); with
    ``full_history_only`` just the symbols that cover the whole range."""
    import pandas as pd

    closes = {}
    for path in sorted(data_dir.glob("*.csv.gz")):
        frame = pd.read_csv(path, usecols=["timestamp", "close"])
        closes[path.name.split(".")[0]] = pd.Series(
            frame["close"].to_numpy(), index=pd.to_datetime(frame["timestamp"], unit="ms")
        )
    if not closes:
        raise SystemExit(f"no *.csv.gz files in {data_dir}")
    first_bar = min(series.index[0] for series in closes.values())
    last_bar = max(series.index[-1] for series in closes.values())
    grid = pd.date_range(first_bar, last_bar, freq="h")
    names = [n for n, s in closes.items() if not full_history_only or s.index[0] == first_bar]
    return pd.DataFrame({name: closes[name].reindex(grid).ffill() for name in names})


def django_setup(database_url: str | None = None) -> None:
    """Django on ``database_url`` (or the DATABASE_URL already in the environment), migrated."""
    if database_url is not None:
        os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "statarb_site.settings"
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", "benchmark-only-" + "x" * 50)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
