"""The core stays light: sampling and scoring import no ML framework, database or web framework.

Checked in a fresh interpreter, since this test process may have imported anything already.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

HEAVY = ("torch", "transformers", "sqlalchemy", "fastapi", "datasets")


def modules_loaded_after(code: str) -> set[str]:
    """Top-level module names present in ``sys.modules`` after running ``code`` afresh."""
    script = textwrap.dedent(code) + (
        "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_importing_sampling_and_scoring_pulls_in_no_heavy_dependency() -> None:
    loaded = modules_loaded_after("import predwatch.sampling, predwatch.scoring")
    assert not loaded & set(HEAVY)
    assert "jsonschema" not in loaded  # imported when a schema validator is first built


def test_selecting_scoring_and_validating_stays_light() -> None:
    loaded = modules_loaded_after("""
        from predwatch.sampling import select_samples
        from predwatch.scoring import run_validators, score_prediction
        selection = select_samples([{"prompt": "2+2?", "completion": "4"}], 1)
        score_prediction("4", selection.samples[0].ground_truth)
        run_validators('{"a": 1}', [{"kind": "json_schema", "schema": {"type": "object"}},
                                   {"kind": "tool_call"}, {"kind": "regex", "pattern": "a"}])
    """)
    assert not loaded & set(HEAVY), "a list source must not import datasets either"
