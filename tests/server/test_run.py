"""A server process (``predwatch serve``'s worker factory) exempts its start-up heap from GC."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from predwatch.config import Settings

PROBE = """
import gc, json
from predwatch.server.run import app_from_env
before = gc.get_freeze_count()
app = app_from_env()
# A full pass after start-up walks only what is not frozen.
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(),
                  "tracked": len(gc.get_objects()), "routes": len(app.state.routes)}))
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


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PREDWATCH_")}
