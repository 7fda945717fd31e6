"""Pieces every benchmark script needs: where the repo and the shared data are, loading the real closes, Django
set-up for a benchmark database, and peak memory. Heavy imports happen inside the functions, so a script can set
its BLAS thread variables before numpy loads."""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "binance-usdt-1h-2021"


def load_closes(data_dir: Path, *, full_history_only: bool = False, column: str = "close"):
    """Closes (or another ``column``: open, high, low, volume) of the shared symbols on the full hourly grid,
    forward-filled (NaN before a listing); with ``full_history_only`` just the symbols that cover the whole range."""
    import pandas as pd

    closes = {}
    for path in sorted(data_dir.glob("*.csv.gz")):
        frame = pd.read_csv(path, usecols=["timestamp", column])
        closes[path.name.split(".")[0]] = pd.Series(
            frame[column].to_numpy(), index=pd.to_datetime(frame["timestamp"], unit="ms")
        )
    if not closes:
        raise SystemExit(f"no *.csv.gz files in {data_dir}")
    first_bar = min(series.index[0] for series in closes.values())
    last_bar = max(series.index[-1] for series in closes.values())
    grid = pd.date_range(first_bar, last_bar, freq="h")
    names = [n for n, s in closes.items() if not full_history_only or s.index[0] == first_bar]
    return pd.DataFrame({name: closes[name].reindex(grid).ffill() for name in names})


def django_setup(database_url: str | None = None, *, migrate: bool = True) -> None:
    """Django on ``database_url`` (or the DATABASE_URL already in the environment), migrated unless ``migrate`` is
    False (a child process whose parent migrated already)."""
    if database_url is not None:
        os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "statarb_site.settings.local"
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", "benchmark-only-" + "x" * 50)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


def machine_description() -> str:
    """How every report names the machine, "<processor>, <n> CPUs, Python <version>" (each script adds what matters
    to its times, such as the BLAS threads or the load average)."""
    import platform

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages ("0.12, 0.34, 0.56"): on a shared machine other load moves the times."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def command_line(script: str) -> str:
    """The command a report came from, as typed from the repository root (``script`` is the path from there)."""
    import shlex

    return shlex.join([Path(sys.executable).name, script, *sys.argv[1:]])


def print_row(*cells) -> None:
    """One markdown table row: ``| a | b |``."""
    print("| " + " | ".join(str(cell) for cell in cells) + " |")


def print_table_head(columns, align: str) -> None:
    """A markdown table's header and alignment rows; ``align`` has one letter per column, "l" (left) or "r"
    (right, for numbers)."""
    if len(align) != len(columns):
        raise ValueError(f"{len(columns)} columns but alignment {align!r}")
    print_row(*columns)
    print("|" + "".join("---:|" if a == "r" else "---|" for a in align))


def run_json_child(command: list[str], *, what: str, env: dict | None = None, cwd: Path | None = None) -> dict:
    """Run ``command`` (one of our scripts, given ``--result-file PATH``) in a fresh process and return the JSON it
    wrote there. A fresh process where a measurement must not share the parent's state: Django reads its database
    once, peak RSS only grows. A failed child stops the benchmark ("<what> failed (exit status N)")."""
    import json
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result_path = Path(handle.name)
    try:
        completed = subprocess.run([*command, "--result-file", str(result_path)], env=env, cwd=cwd, check=False)
        if completed.returncode != 0:
            raise SystemExit(f"{what} failed (exit status {completed.returncode})")
        return json.loads(result_path.read_text())
    finally:
        result_path.unlink(missing_ok=True)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class DatabaseUnavailable(Exception):
    """A mysql:// database a benchmark can't use: a bad name, an unreachable server, a refused statement."""


def _mysql_server(url: str):
    """(a server connection without a database, the database name) for a mysql:// URL."""
    import re

    import environ
    import MySQLdb

    config = environ.Env.db_url_config(url)
    name = config["NAME"]
    if not re.fullmatch(r"[A-Za-z0-9_]+", name or ""):
        raise DatabaseUnavailable(f"database name {name!r} must be letters, digits and underscores")
    try:
        server = MySQLdb.connect(host=config.get("HOST") or "127.0.0.1", port=int(config.get("PORT") or 3306),
                                 user=config.get("USER") or "root", password=config.get("PASSWORD") or "",
                                 connect_timeout=5)
    except MySQLdb.Error as exc:
        raise DatabaseUnavailable(f"cannot connect to MariaDB/MySQL at {config.get('HOST')}:{config.get('PORT')}: "
                                  f"{exc}") from exc
    return server, name


def _on_server(url: str, statements) -> None:
    """Run ``statements(name)`` (SQL texts) on the server of a mysql:// URL."""
    import MySQLdb

    server, name = _mysql_server(url)
    try:
        cursor = server.cursor()
        for statement in statements(name):
            cursor.execute(statement)
    except MySQLdb.Error as exc:
        raise DatabaseUnavailable(f"database {name}: {exc}") from exc
    finally:
        server.close()


def _create(name: str, *, if_missing: bool) -> str:
    exists = "IF NOT EXISTS " if if_missing else ""
    return f"CREATE DATABASE {exists}`{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"


def ensure_mysql_database(url: str) -> None:
    """Create the database of a mysql:// URL if it doesn't exist (utf8mb4). Raises DatabaseUnavailable."""
    _on_server(url, lambda name: [_create(name, if_missing=True)])


def recreate_mysql_database(url: str, *, drop_only: bool = False) -> None:
    """Drop the database of a mysql:// URL and (unless ``drop_only``) create it empty again. Raises
    DatabaseUnavailable."""
    _on_server(url, lambda name: [f"DROP DATABASE IF EXISTS `{name}`"] + ([] if drop_only else
                                                                          [_create(name, if_missing=False)]))


def mysql_problem(action, url: str, **kwargs) -> str | None:
    """``action(url, **kwargs)`` (ensure_mysql_database, recreate_mysql_database); None if it worked, else why not."""
    try:
        action(url, **kwargs)
    except DatabaseUnavailable as exc:
        return str(exc)
    return None


@contextmanager
def benchmark_database(prefix: str, database_url: str | None, *, fresh: bool = False) -> Iterator[str]:
    """The database URL a benchmark runs on: a throw-away SQLite file when ``database_url`` is None (removed at the
    end); a mysql:// database, created if missing, or with ``fresh`` dropped and created again at the start and
    dropped at the end (it belongs to the benchmark); any other URL as it is."""
    if database_url is None:
        path = temporary_sqlite(prefix)
        try:
            yield f"sqlite:///{path}"
        finally:
            remove_sqlite(path)
        return
    if not database_url.startswith("mysql://"):
        if fresh:
            raise SystemExit(f"{prefix}: the database must be a mysql:// URL of the benchmark's own (the default is a "
                             "temporary SQLite file)")
        yield database_url  # another database the caller named, used as it is
        return
    try:
        (recreate_mysql_database if fresh else ensure_mysql_database)(database_url)
    except DatabaseUnavailable as exc:
        raise SystemExit(f"{prefix}: {exc}") from exc
    try:
        yield database_url
    finally:
        if fresh:
            from django.db import connections

            connections.close_all()
            recreate_mysql_database(database_url, drop_only=True)


def temporary_sqlite(prefix: str) -> Path:
    """A path for a throw-away SQLite database (remove it with ``remove_sqlite``)."""
    import tempfile
    import uuid

    return Path(tempfile.gettempdir()) / f"{prefix}_{uuid.uuid4().hex}.sqlite3"


def remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def database_description() -> str:
    from django.db import connection

    if connection.vendor == "mysql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT VERSION(), @@innodb_buffer_pool_size, @@innodb_flush_log_at_trx_commit")
            version, pool, flush = cursor.fetchone()
        return f"MariaDB/MySQL {version} (buffer pool {int(pool) // 2**20} MiB, flush_log_at_trx_commit={flush})"
    import sqlite3

    return f"SQLite {sqlite3.sqlite_version} (temporary file, WAL, synchronous=NORMAL)"


def instrument_phases(module, names, seconds: dict[str, float], calls: dict[str, int] | None = None) -> None:
    """Replace the module-level functions ``names`` by wrappers adding their time to ``seconds[name]`` and, with
    ``calls``, counting them in ``calls[name]`` (callers look them up in the module at call time)."""
    import functools
    import time

    for name in names:
        original = getattr(module, name)

        @functools.wraps(original)
        def timed(*args, _original=original, _name=name, **kwargs):
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                seconds[_name] += time.perf_counter() - start
                if calls is not None:
                    calls[_name] += 1

        setattr(module, name, timed)
