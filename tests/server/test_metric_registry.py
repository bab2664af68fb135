"""A metric added by one decorator shows up everywhere: the API, the run page and its charts.

Nothing else is edited: the registration's metadata (label, direction, range, format) is what
the metrics list, the run overview (headline cards), trends (``averages``), the run page's
columns, sort orders and embedded chart specs all derive from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from predwatch.config import Settings
from predwatch.scoring import metric_info, score_prediction, scorer
from predwatch.scoring.registry import METRICS, SCORERS
from predwatch.server import create_app


@pytest.fixture
def shout_rate() -> Iterator[str]:
    """A metric registered for one test: the share of upper-case letters in the answer."""

    @scorer("shout_rate", label="Shout", title="Shout rate", higher_is_better=False)
    def shout(prediction: str, ground_truth: str) -> float:
        letters = [c for c in prediction if c.isalpha()]
        return sum(c.isupper() for c in letters) / len(letters) if letters else 0.0

    try:
        yield "shout_rate"
    finally:
        SCORERS.unregister("shout_rate")
        METRICS.pop("shout_rate", None)


def record(client: TestClient, answers: list[str]) -> str:
    created = client.post("/api/runs", json={"name": "loud"}).json()
    run_id, token = created["job_id"], created["token"]
    for step, answer in enumerate(answers, start=1):
        scores = score_prediction(answer, "quiet", ["char_error_rate", "shout_rate"])
        row = {"step": step * 10, "prompt": "say it", "ground_truth": "quiet",
               "prediction": answer, "char_error_rate": scores["char_error_rate"],
               "metrics": {"shout_rate": scores["shout_rate"]}}
        sent = client.post("/api/training/local/predictions",
                           json={"job_id": run_id, "predictions": [row]},
                           headers={"Authorization": f"Bearer {token}"})
        assert sent.status_code == 200, sent.text
    return run_id


def test_a_metric_added_by_decorator_appears_in_api_page_and_charts(
    store: Any, shout_rate: str,
) -> None:
    assert metric_info(shout_rate).label == "Shout"
    with TestClient(create_app(store, Settings())) as client:
        run_id = record(client, ["QUIET", "Quiet", "quiet"])

        listed = {m["name"]: m for m in client.get("/api/metrics").json()["metrics"]}
        assert listed[shout_rate] == {"name": shout_rate, "label": "Shout", "title": "Shout rate",
                                      "higher_is_better": False, "range": [0.0, 1.0],
                                      "format": "num", "featured": None}
        trends = client.get(f"/api/training/predictions/{run_id}/trends?per=point").json()["trends"]
        assert [t["averages"][shout_rate] for t in trends] == [1.0, 0.2, 0.0]
        overview = client.get(f"/api/runs/{run_id}/overview").json()
        assert shout_rate in [m["name"] for m in overview["metrics"]]
        card = next(c for c in overview["cards"] if c["metric"]["name"] == shout_rate)
        assert card["value"] == 0.0 and card["first"] == 1.0 and card["change"] == -1.0

        html = client.get(f"/runs/{run_id}").text
        assert '<th class="num" title="mean shout rate">Shout</th>' in html  # points table
        assert 'data-stat="shout_rate"' in html  # a headline card, its drop shown as good
        card_html = html.split('data-stat="shout_rate"')[1].split("</div>\n  </div>")[0]
        assert "delta-good" in card_html
        assert 'data-chart="shout_rate"' in html
        assert 'value="-shout_rate"' in html  # a sort order
        specs = json.loads(re.search(r'<script type="application/json" id="chart-specs">'
                                     r"(.*?)</script>", html, re.DOTALL).group(1))
        chart = next(s for s in specs if s["key"] == shout_rate)
        assert chart["title"] == "Shout rate"
        assert chart["series"][0]["metric"] == shout_rate and chart["range"] == [0.0, 1.0]
        embedded = json.loads(re.search(r'id="trends-data"[^>]*>(.*?)</script>', html,
                                        re.DOTALL).group(1))
        assert [t["averages"][shout_rate] for t in embedded] == [1.0, 0.2, 0.0]


def test_a_run_without_values_for_an_optional_metric_does_not_show_it(
    store: Any, shout_rate: str,
) -> None:
    with TestClient(create_app(store, Settings())) as client:
        created = client.post("/api/runs", json={}).json()
        overview = client.get(f"/api/runs/{created['job_id']}/overview").json()
        assert shout_rate not in [m["name"] for m in overview["metrics"]]
        assert [m["name"] for m in overview["metrics"]] == [
            "exact_match", "char_error_rate", "word_overlap", "token_f1"]
        assert 'data-chart="shout_rate"' not in client.get(f"/runs/{created['job_id']}").text
