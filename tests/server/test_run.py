"""A server process (``predwatch serve``'s worker factory) exempts its start-up heap from GC
and collects its young generation less often."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from predwatch.config import Settings
from predwatch.server.run import GC_THRESHOLDS

PROBE = """
import gc, json
from predwatch.server.run import app_from_env
before, thresholds = gc.get_freeze_count(), gc.get_threshold()
app = app_from_env()
# A full pass after start-up walks only what is not frozen.
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(),
                  "tracked": len(gc.get_objects()), "routes": len(app.state.routes),
                  "thresholds_before": thresholds, "thresholds": gc.get_threshold()}))
"""


def test_the_worker_factory_freezes_the_start_up_heap(tmp_path: Path) -> None:
    env = Settings(database_url=f"sqlite:///{tmp_path / 'pw.db'}").to_env()
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          timeout=120, env={**_base_env(), **env})
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts["before"] == 0 and facts["routes"] > 20
    # Modules, routes and the store: tens of thousands of objects, left out of every pass.
    assert facts["frozen"] > 20_000
    assert facts["tracked"] < facts["frozen"] / 10
    # Python's own thresholds (700 objects on 3.11) until the app is built; the server's after.
    assert facts["thresholds_before"][0] < GC_THRESHOLDS[0]
    assert facts["thresholds"] == list(GC_THRESHOLDS)


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PREDWATCH_")}
