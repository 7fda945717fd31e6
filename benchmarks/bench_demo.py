"""The batch part of ``make demo`` (everything before the server starts), timed step by step on a fresh var dir.

The same commands as the Makefile's ``seed`` and ``demo`` targets, in the same order, with ``DEBUG=1`` and the
shared data as ``STATARB_DATA_DIR``; each runs as its own process, as ``make`` runs it. Wall seconds and the CPU
seconds the step's process used (user + system), so a loaded machine shows as wall >> CPU. Target: under 5 minutes
of wall time on 2 cores (#19).

    .venv/bin/python benchmarks/bench_demo.py [--data DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _shared import DEFAULT_DATA_DIR, REPO_ROOT

STEPS = (
    ("migrate", ["migrate", "--noinput", "-v", "0"]),
    ("setup_periodic_tasks", ["setup_periodic_tasks"]),
    ("seed_demo", ["seed_demo"]),
    ("collectstatic", ["collectstatic", "--noinput", "-v", "0"]),
    ("demo_pipeline", ["demo_pipeline"]),
)
TARGET_S = 300


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="candle files (STATARB_DATA_DIR)")
    parser.add_argument("--keep", action="store_true", help="keep the var dir (printed) instead of removing it")
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"no data at {args.data}")
    var_dir = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    env = {**os.environ, "DEBUG": "1", "STATARB_VAR_DIR": str(var_dir), "STATARB_DATA_DIR": str(args.data)}
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL"):  # the embedded default, as `make demo`
        env.pop(name, None)
    load_start = os.getloadavg()
    rows, total_wall, total_cpu = [], 0.0, 0.0
    for name, command in STEPS:
        cpu, started = _cpu_s(), time.monotonic()
        subprocess.run([sys.executable, "manage.py", *command], cwd=REPO_ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        wall, cpu = time.monotonic() - started, _cpu_s() - cpu
        rows.append((name, wall, cpu))
        total_wall += wall
        total_cpu += cpu
    load_end = os.getloadavg()
    print("# `make demo`, batch part (fresh var dir, embedded SQLite)\n")
    print(f"data {args.data}, `nproc` {os.cpu_count()}, load average at start {_load(load_start)}, "
          f"at end {_load(load_end)}\n")  # fmt: skip
    print("| step | wall (s) | CPU (s) |\n|---|---:|---:|")
    for name, wall, cpu in rows:
        print(f"| `{name}` | {wall:.1f} | {cpu:.1f} |")
    verdict = "met" if total_wall < TARGET_S else "MISSED"
    print(f"| **all** | **{total_wall:.1f}** | **{total_cpu:.1f}** |\n")
    print(f"target: under {TARGET_S} s of wall time: {verdict}")
    if args.keep:
        print(f"var dir kept: {var_dir}")
    else:
        shutil.rmtree(var_dir)


def _load(values: tuple[float, float, float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
