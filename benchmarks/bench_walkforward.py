"""Benchmark ``python manage.py walkforward`` on all shared symbols, weekly re-formation, one point and a grid.

Run from the repository root:  python benchmarks/bench_walkforward.py
Options: --points 50 (grid size, 0 to skip the grid), --var-dir DIR (keep the imported SQLite database there and
reuse it on the next run; default: a temporary directory, deleted afterwards), --start / --end (traded range).

Data: every file of ../shared/data/binance-usdt-1h-2021 (126 symbols, 2020-12-01 to 2021-07-17), imported in place
with ``manage.py import_candles`` into an SQLite database (setup, timed apart). The default settings need 2,500 bars
(formation 2,000 + validation 500) before the first traded bar, so the first possible start on this data is
2021-03-15 04:00 UTC; the traded range is that start to the last stored bar (2021-07-17).

Timed: the command in a fresh process (start-up, candle load, every period's point-in-time universe, screen,
confirmation, validation, grading, trading, report and JSON), wall and CPU time of the child and its peak RSS
(``wait4``). Runs: one point in one process; one point with ``STATARB_SCREEN_PROCESSES=2`` (two forked processes
share each screen); the grid of ``--points`` points generated from the rule's thresholds and two screening
p-values (so two formations are screened per period, the others shared), its JSON gives the PBO and the nested
choices; and ``--screen-variants`` points that each screen on their own (``max_qvalue`` differs), with two
processes, the worst case of a grid: its time per point, times 50, bounds a 50-point grid of distinct screens.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _shared import (
    DEFAULT_DATA_DIR,
    REPO_ROOT,
    command_line,
    load_average,
    machine_description,
    print_row,
    print_table_head,
)


def grid(n_points: int) -> list[dict]:
    """``n_points`` distinct points: entry, exit, stop, holding and the screening p-value varied."""
    combos = itertools.product([0.05, 0.01], [2.0, 1.5, 2.5], [0.0, 0.5], [4.0, 5.0], [3.0, 2.0], ["rolling", "frozen"])
    points = [{"max_pvalue": p, "entry_z": e, "exit_z": x, "stop_z": s, "max_holding_half_lives": h, "trade_zscore": z}
              for p, e, x, s, h, z in combos]
    if n_points > len(points):
        raise SystemExit(f"at most {len(points)} grid points")
    return points[:n_points]


def timed(args: list[str], env: dict) -> dict:
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    output = process.stdout.read()
    if status != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed: {output}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mib": usage.ru_maxrss / 1024,
            "summary": output.strip().splitlines()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--var-dir", type=Path, default=None)
    parser.add_argument("--start", default="2021-03-15T04:00")
    parser.add_argument("--end", default="2021-07-31")
    parser.add_argument("--points", type=int, default=50)
    parser.add_argument("--screen-variants", type=int, default=4)
    args = parser.parse_args()
    var_dir = args.var_dir or Path(tempfile.mkdtemp(prefix="bench-walkforward-"))
    var_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "STATARB_VAR_DIR": str(var_dir), "DJANGO_SETTINGS_MODULE": "statarb_site.settings.local",
           "DEBUG": "0"}
    env.pop("DATABASE_URL", None)
    try:
        print(f"# {command_line('benchmarks/bench_walkforward.py')}")
        print(f"Machine: {machine_description()}; load average before: {load_average()}")
        if not (var_dir / "statarb.sqlite3").exists():
            started = time.monotonic()
            subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=REPO_ROOT, env=env, check=True)
            subprocess.run([sys.executable, "manage.py", "import_candles", str(args.data_dir), "-v0"], cwd=REPO_ROOT,
                           env=env, check=True, stdout=subprocess.DEVNULL)
            print(f"Setup (migrate + import of every file): {time.monotonic() - started:.1f} s")
        span = ["walkforward", "--start", args.start, "--end", args.end, "-v0"]
        runs = [("1 point (current settings)", [*span, "--json", str(var_dir / "one.json")], {}),
                ("1 point, 2 screen processes", span, {"STATARB_SCREEN_PROCESSES": "2"})]
        if args.points:
            grid_path = var_dir / "grid.json"
            grid_path.write_text(json.dumps(grid(args.points)))
            runs.append((f"{args.points}-point grid (2 screens a period)",
                         [*span, "--grid", str(grid_path), "--json", str(var_dir / "grid-out.json")], {}))
        if args.screen_variants:
            variants_path = var_dir / "variants.json"
            variants_path.write_text(json.dumps([{"max_qvalue": round(0.10 - 0.01 * k, 2)}
                                                 for k in range(args.screen_variants)]))
            runs.append((f"{args.screen_variants} points, each its own screen, 2 screen processes",
                         [*span, "--grid", str(variants_path)], {"STATARB_SCREEN_PROCESSES": "2"}))
        print_table_head(["run", "wall (s)", "CPU (s)", "peak RSS (MiB)", "summary"], "lrrrl")
        for label, command, extra in runs:
            result = timed(command, {**env, **extra})
            print_row(label, f"{result['wall']:.1f}", f"{result['cpu']:.1f}", f"{result['rss_mib']:.0f}",
                      result["summary"])
        print(f"Load average after: {load_average()}")
    finally:
        if args.var_dir is None:
            shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
