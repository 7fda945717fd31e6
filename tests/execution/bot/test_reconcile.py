"""The reconciliation's notification key: one message per account and set of mismatches, whatever the process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = """
import django
django.setup()
from execution.bot.reconcile import mismatch_dedupe_key
print(mismatch_dedupe_key(7, ["YYYUSDT: exchange holds 5, trades hold 0"]))
"""


def test_a_standing_mismatch_has_the_same_key_in_every_worker_process():
    """A restarted worker (another PYTHONHASHSEED) must find the key already stored and not alert again."""
    keys = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "DJANGO_SETTINGS_MODULE": "statarb_site.settings.test"}
        done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120, check=True)
        keys.add(done.stdout.strip().splitlines()[-1])
    assert len(keys) == 1 and keys.pop().startswith("reconcile_mismatch:7:")
