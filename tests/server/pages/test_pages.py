"""The HTML pages through FastAPI's TestClient, as a browser without JavaScript sees them.

Data comes from the real pipeline (``Recorder`` with a ``FakeGenerator``) into a real SQLite
file, built once for the module. Checks: every page answers 200 with its content in the HTML,
text from runs is escaped, filters/sort/paging work through the query string, and the pages
agree with their JSON twins.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("jinja2")
from fastapi.testclient import TestClient

from predwatch.config import Settings
from predwatch.generation.fake import FakeGenerator
from predwatch.recording.recorder import Recorder
from predwatch.records import Run
from predwatch.server import create_app
from predwatch.storage import open_store

HOSTILE = "<script>alert('pw')</script> Reply with <b>bold</b>"
PEOPLE = [("ada", 36), ("bob", 41), ("eve", 29), ("max", 52), ("zoe", 23), ("ian", 64)]
SAMPLES = [
    {"prompt": f"Extract: name {n}, age {a}\nJSON:",
     "completion": json.dumps({"name": n, "age": a})}
    for n, a in PEOPLE
] + [{"prompt": HOSTILE, "completion": '{"html": "<img src=x onerror=alert(1)>"}'},
      {"messages": [{"role": "system", "content": "Answer in JSON."},
                    {"role": "user", "content": "Extract: name kim, age 30"},
                    {"role": "assistant", "content": json.dumps({"name": "kim", "age": 30})}]}]


def _record(db: str, tmp: Path, name: str, answers: list[Any], *,
            samples: list[dict[str, str]] = SAMPLES, steps: list[int] | None = None) -> str:
    recorder = Recorder({"sample_count": len(samples), "validators": {"json_parse": True}},
                        samples=samples, db=db, run_name=name, model_name="fake-model",
                        spool_dir=str(tmp / "spool"))
    for i, answer in enumerate(answers):
        step = steps[i] if steps else (i + 1) * 10
        recorder.record(step=step, epoch=step / 20, generator=FakeGenerator(answer))
    assert recorder.close() == 0
    return recorder.run.id


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("pages")
    db = f"sqlite:///{tmp / 'pages.db'}"

    def half(sample: Any) -> str:  # a partly learned answer: invalid JSON, some words right
        return (sample.ground_truth or "")[:12]

    def last(sample: Any) -> str:  # learned, except the hostile prompt gets raw HTML back
        return "<img src=x onerror=alert(1)>" if sample.prompt == HOSTILE else sample.ground_truth

    def planted(sample: Any) -> str:  # one prompt regresses, the others are perfect
        if "bob" in sample.prompt:
            return '{"name": "bob", "age": 14'
        return sample.ground_truth or ""

    store = open_store(db)
    for i in range(24):  # older runs, enough for a second page of the runs list
        store.create_run(Run(id=f"bulk-{i:02d}", name=f"bulk {i}"))
    ids = {
        "alpha": _record(db, tmp, "alpha", [lambda s: "garbage", half, last]),
        "baseline": _record(db, tmp, "baseline", [None], steps=[100]),
        "candidate": _record(db, tmp, "candidate", [planted], steps=[100]),
        "wide": _record(db, tmp, "wide", [half], samples=[
            {"prompt": f"Count to {i}", "completion": str(i)} for i in range(60)]),
    }
    store.create_run(Run(id="empty-run", name="empty"))
    try:
        yield {"store": store, "ids": ids, "db": db,
               "client": TestClient(create_app(store, Settings()))}
    finally:
        store.close()


def rows(html: str, table_class: str = "predictions-table") -> list[str]:
    """The ``<tr>`` elements of a table's body."""
    match = re.search(rf'<table class="grid {table_class}">.*?<tbody>(.*?)</tbody>', html,
                      re.DOTALL)
    return re.findall(r"<tr\b.*?</tr>", match.group(1), re.DOTALL) if match else []


def test_every_page_answers_html_with_its_content(data: dict[str, Any]) -> None:
    client, ids, store = data["client"], data["ids"], data["store"]
    alpha = ids["alpha"]
    prompt_id = store.point_predictions(alpha, 30)[0].prompt_id
    pages = {
        "/": ["<h1>Runs</h1>", "alpha", "candidate"],
        f"/runs/{alpha}": ["Overall improvement", "Evaluation points", "Predictions at step 30",
                           "Failures &amp; worst samples"],
        f"/runs/{alpha}/prompts/{prompt_id}": ["Prompt timeline", "Expected answer", "step 10"],
        f"/compare?run_a={ids['baseline']}&run_b={ids['candidate']}": ["Regressed", "Answer B"],
        "/compare": ["choose a run"],
        "/config": ["Predictions config builder", 'name="sample_frequency"'],
    }
    for url, needles in pages.items():
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.headers["content-type"].startswith("text/html")
        for needle in needles:
            assert needle in response.text, (url, needle)
        # Everything the page loads comes from this server (no CDN): the UI works offline.
        for ref in re.findall(r'(?:src|href)="([^"]+)"', response.text):
            assert not re.match(r"^(https?:)?//", ref), (url, ref)


def test_text_from_runs_is_escaped_everywhere(data: dict[str, Any]) -> None:
    client, ids, store = data["client"], data["ids"], data["store"]
    alpha = ids["alpha"]
    hostile = next(p for p in store.point_predictions(alpha, 30) if p.prompt == HOSTILE)
    for url in (f"/runs/{alpha}", f"/runs/{alpha}?q=alert",
                f"/runs/{alpha}/prompts/{hostile.prompt_id}",
                f"/compare?run_a={alpha}&step_a=10&step_b=30", "/?q=<script>x</script>"):
        html = client.get(url).text
        assert "<script>alert" not in html and "<img src=x" not in html, url
        assert "<script>x</script>" not in html
    assert "&lt;script&gt;alert(&#39;pw&#39;)&lt;/script&gt;" in client.get(f"/runs/{alpha}").text


def test_runs_page_searches_and_pages(data: dict[str, Any]) -> None:
    client = data["client"]
    first = client.get("/").text
    assert len(rows(first, "runs-table")) == 25
    assert "29 runs" in first
    next_link = re.search(r'href="([^"]*cursor=[^"]+)" rel="next"', first)
    assert next_link
    second = client.get(unescape(next_link.group(1))).text
    assert len(rows(second, "runs-table")) == 4
    found = client.get("/?q=candid").text
    assert [r for r in rows(found, "runs-table")]
    assert "candidate" in found and "baseline" not in found
    assert "No run matches" in client.get("/?q=nothing-like-this").text


def test_runs_page_shows_last_point_metrics_and_a_sparkline(data: dict[str, Any]) -> None:
    html = data["client"].get("/?q=alpha").text
    (row,) = rows(html, "runs-table")
    assert "step 30 · epoch 1.5" in row and "3 points" in row
    assert "<svg class=\"spark" in row and row.count(",") >= 2  # three points in the polyline
    assert "finished" in row and "fake-model" in row


def test_run_page_matches_its_json_twin(data: dict[str, Any]) -> None:
    client, alpha = data["client"], data["ids"]["alpha"]
    html = client.get(f"/runs/{alpha}").text
    api = client.get(f"/api/training/predictions/{alpha}/trends", params={"per": "point"}).json()
    embedded = json.loads(re.search(
        r'<script type="application/json" id="trends-data"[^>]*>(.*?)</script>', html,
        re.DOTALL).group(1))
    assert [t["step"] for t in embedded] == [t["step"] for t in api["trends"]] == [10, 20, 30]
    assert f'{api["overall_improvement"]:+.1f}%' in html
    assert len(rows(html, "points-table")) == 3
    assert len(rows(html)) == len(SAMPLES)  # the latest point by default


def test_run_page_head_renders_the_overview_its_api_answers(data: dict[str, Any]) -> None:
    client, alpha = data["client"], data["ids"]["alpha"]
    overview = client.get(f"/api/runs/{alpha}/overview").json()
    html = client.get(f"/runs/{alpha}").text
    assert [p["step"] for p in overview["points"]] == [10, 20, 30]
    assert overview["summary"]["point_count"] == 3 == len(rows(html, "points-table"))
    assert f'{overview["overall_improvement"]:+.1f}%' in html
    for card in overview["cards"]:
        metric = card["metric"]
        stat = re.search(rf'data-stat="{metric["title"].lower().replace(" ", "_")}">\s*'
                         r'<div class="label">[^<]*</div>\s*<div class="value">([^<]*)</div>',
                         html)
        assert stat, metric["name"]
        value = card["value"]
        shown = "—" if value is None else (f"{value * 100:.1f}%" if metric["format"] == "pct"
                                           else f"{value:.3f}")
        assert stat.group(1) == shown, metric["name"]


def test_failed_only_filter_shows_exactly_the_failed_answers(data: dict[str, Any]) -> None:
    client, store, alpha = data["client"], data["store"], data["ids"]["alpha"]
    expected = store.list_predictions(alpha, step=30, failed_only=True).total
    assert expected and expected < len(SAMPLES)
    html = client.get(f"/runs/{alpha}?step=30&failed=1").text
    found = rows(html)
    assert len(found) == expected
    assert all("badge-fail" in r or "badge-error" in r for r in found)
    assert 'name="failed" value="1" checked' in html  # the form shows the filter


def test_validator_search_sort_and_paging_go_through_the_query_string(data: dict[str, Any]) -> None:
    client, ids = data["client"], data["ids"]
    alpha, wide = ids["alpha"], ids["wide"]
    by_validator = rows(client.get(f"/runs/{alpha}?step=20&validator=json_parse").text)
    assert len(by_validator) == len(SAMPLES)  # every cut-off answer fails json_parse
    (match,) = rows(client.get(f"/runs/{alpha}?step=30&q=name%20eve").text)
    assert "eve" in match
    ordered = rows(client.get(f"/runs/{wide}?sort=-char_error_rate").text)
    cers = [float(re.search(r'data-score="char_error_rate">([\d.]+)<', r).group(1))
            for r in ordered]
    assert cers == sorted(cers, reverse=True)
    page1 = client.get(f"/runs/{wide}").text
    assert len(rows(page1)) == 50 and "rows 1–50 of 60" in page1
    page2 = client.get(f"/runs/{wide}?page=2").text
    assert len(rows(page2)) == 10 and "rows 51–60 of 60" in page2


def test_worst_samples_panel_uses_the_lenses(data: dict[str, Any]) -> None:
    client, ids = data["client"], data["ids"]
    html = client.get(f"/runs/{ids['candidate']}").text
    assert "Lowest score" in html and "Largest drop" in html
    first = re.search(r'<ol class="worst-list">\s*<li>(.*?)</li>', html, re.DOTALL).group(1)
    assert "name bob" in first  # the planted wrong answer has the highest CER
    drop = client.get(f"/runs/{ids['alpha']}?lens=largest_drop").text
    assert 'aria-current="true">Largest drop' in drop


def test_timeline_shows_word_diffs_flips_and_the_best_point(data: dict[str, Any]) -> None:
    client, store, alpha = data["client"], data["store"], data["ids"]["alpha"]
    prompt = store.point_predictions(alpha, 30)[0]
    html = client.get(f"/runs/{alpha}/prompts/{prompt.prompt_id}").text
    assert html.count('<li class="entry') == 3
    assert "<ins>" in html and "<del>" in html
    assert "fail → pass" in html and "★ best" in html
    assert "best at step 30" in html


def test_timeline_of_a_chat_prompt_shows_the_whole_conversation(data: dict[str, Any]) -> None:
    client, store, alpha = data["client"], data["store"], data["ids"]["alpha"]
    chat = next(p for p in store.point_predictions(alpha, 30) if p.messages)
    html = client.get(f"/runs/{alpha}/prompts/{chat.prompt_id}").text
    turns = re.findall(r'<li class="turn turn-(\w+)"><span class="role">\w+</span>'
                       r'<div class="content">(.*?)</div>', html, re.S)
    assert turns == [("system", "Answer in JSON."), ("user", "Extract: name kim, age 30")]
    assert "(chat)" in html
    table = data["client"].get(f"/runs/{alpha}?q=kim").text
    assert 'title="chat prompt">chat</span>' in table


def test_compare_runs_lists_the_planted_regression_first(data: dict[str, Any]) -> None:
    client, ids = data["client"], data["ids"]
    url = f"/compare?run_a={ids['baseline']}&run_b={ids['candidate']}"
    html = client.get(url).text
    api = client.get(f"/api/compare?run_a={ids['baseline']}&run_b={ids['candidate']}").json()
    assert api["counts"]["regressed"] == 1
    assert re.search(r'data-count="regressed"><div class="label">Regressed</div>'
                     r'<div class="value bad">1<', html)
    first = rows(html, "compare-table")[0]
    assert "row-regressed" in first and "name bob" in first and "pass → fail" not in first
    assert "validation pass -&gt; fail" in first and "<del>" in first and "<ins>" in first
    only = rows(client.get(url + "&regressed_only=1").text, "compare-table")
    assert len(only) == 1


def test_compare_page_says_whether_the_regression_is_significant(data: dict[str, Any]) -> None:
    """The page shows the API's significance: the test that ran, its counts and p-values, the
    bootstrap intervals, and the verdict (one planted regression is not beyond chance)."""
    client, ids = data["client"], data["ids"]
    query = f"run_a={ids['baseline']}&run_b={ids['candidate']}"
    sig = client.get(f"/api/compare?{query}").json()["significance"]
    html = client.get(f"/compare?{query}").text
    section = re.search(r'<section aria-labelledby="significance-title".*?</section>', html, re.S)
    assert section, "no significance section on the compare page"
    text = section.group(0)
    assert f'data-test="{sig["test"]}"' in text and sig["test_description"] in text
    assert f'data-significant="{"yes" if sig["significant_regression"] else "no"}"' in text
    assert sig["significant_regression"] is False and "No significant regression" in text
    validation = sig["validation"]
    row = re.search(r'<tr data-outcome="validation">(.*?)</tr>', text, re.S)
    assert row, "no validation flip row"
    cells = re.findall(r'<td class="num">([^<]*)</td>', row.group(1))
    assert cells == [str(validation["worse"]), str(validation["better"]),
                     f"{validation['p_worse']:.4g}", f"{validation['p_value']:.4g}"]
    # hand-computed: 1 discordant pair, worse: one-sided P(X >= 1 | n=1, 1/2) = 0.5, two-sided 1
    assert (validation["worse"], validation["better"]) == (1, 0)
    assert (validation["p_worse"], validation["p_value"]) == (0.5, 1.0)
    for name in sig["deltas"]:
        assert f'<tr data-score="{name}">' in text


def test_compare_points_of_one_run_defaults_to_the_last_two(data: dict[str, Any]) -> None:
    html = data["client"].get(f"/compare?run_a={data['ids']['alpha']}").text
    assert re.search(r'<option value="20" selected>', html)
    assert re.search(r'<option value="30" selected>', html)
    assert "step 20" in html and "step 30" in html


def test_a_run_without_points_waits_for_the_first(data: dict[str, Any]) -> None:
    html = data["client"].get("/runs/empty-run").text
    assert "No evaluation points yet" in html
    config = json.loads(re.search(r'id="page-config">(.*?)</script>', html, re.DOTALL).group(1))
    assert config["after"] == 0 and config["following"] is True
    assert config["stream_url"] == "/api/training/predictions/empty-run/stream"


def test_errors_outside_the_api_are_html_pages(data: dict[str, Any]) -> None:
    client, alpha = data["client"], data["ids"]["alpha"]
    missing = client.get("/runs/no-such-run")
    assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]
    assert "run &#39;no-such-run&#39; not found" in missing.text
    assert client.get(f"/runs/{alpha}?step=999").status_code == 404
    assert client.get(f"/runs/{alpha}/prompts/nope").status_code == 404
    content_type = client.get("/api/runs/no-such-run").headers["content-type"]
    assert content_type.startswith("application/json")


def test_static_assets_have_content_hashes_and_are_cached_forever(data: dict[str, Any]) -> None:
    from predwatch.server import assets

    client = data["client"]
    html = client.get("/").text
    urls = re.findall(r'(/static/[0-9a-f]{12}/[^"]+)"', html)
    assert any(u.endswith("/app.css") for u in urls) and any(u.endswith("/app.js") for u in urls)
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200 and "immutable" in response.headers["cache-control"]
    imports = assets.import_map()["imports"]
    assert imports["uplot"].endswith("/vendor/uplot/uPlot.esm.js")
    uplot = client.get(imports["uplot"])
    assert uplot.headers["content-type"].startswith("text/javascript") and "uPlot" in uplot.text
    stale = client.get("/static/000000000000/app.js")
    assert stale.status_code == 200 and stale.headers["cache-control"] == "no-cache"
    assert client.get("/static/000000000000/../pages.py").status_code == 404
    vendor = Path(assets.STATIC_DIR, "vendor", "uplot")
    assert "MIT" in (vendor / "LICENSE").read_text()
    assert "uplot 1." in (vendor / "VERSION").read_text()


def test_config_builder_shows_problems_next_to_their_fields(data: dict[str, Any]) -> None:
    client = data["client"]
    bad = client.post("/config", data={
        "sample_frequency": "steps", "step_interval": "3", "sample_count": "5000",
        "metrics": ["exact_match"], "json_schema": "{not json", "rules": '[{"kind": "regex"}]',
    })
    assert bad.status_code == 422
    errors = dict(re.findall(r'<p class="field-error" data-field="([^"]+)">([^<]+)</p>', bad.text))
    assert "step_interval" in errors and "at least" in errors["step_interval"]
    assert "sample_count" in errors
    assert "validators.json_schema" in errors
    assert "not valid JSON" in errors["validators.json_schema"]
    assert any(k == "validators.rules" and "pattern" in v for k, v in errors.items())


def test_config_builder_offers_answers_per_prompt_and_explains_a_bad_value(
    data: dict[str, Any],
) -> None:
    client = data["client"]
    assert 'name="num_samples"' in client.get("/config").text
    bad = client.post("/config", data={"num_samples": "4", "metrics": ["exact_match"]})
    assert bad.status_code == 422
    errors = dict(re.findall(r'<p class="field-error" data-field="([^"]+)">([^<]+)</p>', bad.text))
    assert "need do_sample true" in unescape(errors["num_samples"])
    good = client.post("/config", data={"num_samples": "4", "do_sample": "on",
                                        "metrics": ["exact_match"]})
    config = json.loads(unescape(re.search(r'<pre class="code-block" id="config-json">(.*?)</pre>',
                                           good.text, re.DOTALL).group(1)))
    assert config["num_samples"] == 4 and config["do_sample"] is True


def test_config_builder_gives_json_python_and_an_estimate(data: dict[str, Any]) -> None:
    response = data["client"].post("/config", data={
        "sample_frequency": "steps", "step_interval": "50", "sample_count": "8",
        "max_new_tokens": "64", "metrics": ["exact_match", "char_error_rate"],
        "json_parse": "on", "rules": '[{"kind": "regex", "pattern": "^\\\\{"}]',
        "max_steps": "1000", "tokens_per_second": "400", "seconds_per_step": "0.5",
    })
    assert response.status_code == 200, response.text
    html = response.text
    config = json.loads(unescape(re.search(r'<pre class="code-block" id="config-json">(.*?)</pre>',
                                           html, re.DOTALL).group(1)))
    assert config["step_interval"] == 50 and config["sample_count"] == 8
    assert config["validators"] == {"json_parse": True,
                                    "rules": [{"kind": "regex", "pattern": "^\\{"}]}
    from predwatch.config import PredictionsConfig

    PredictionsConfig.from_dict(config)  # what the page gives is a valid config
    snippet = unescape(re.search(r'id="config-python">(.*?)</pre>', html, re.DOTALL).group(1))
    namespace: dict[str, Any] = {}
    code = snippet.split("\n# prompts")[0].replace("from predwatch import PredictionsCallback", "")
    exec(code, namespace)  # noqa: S102 - running the snippet is the point: it must be valid Python
    assert namespace["config"] == config
    if "data-estimate" in html:
        assert "Evaluation points" in html and ">20<" in html  # 1000 steps / 50


def test_a_key_sees_only_its_runs_and_a_browser_signs_in_with_a_cookie(
    data: dict[str, Any], tmp_path: Path
) -> None:
    from predwatch.server.auth import create_api_key

    store = open_store(f"sqlite:///{tmp_path / 'auth.db'}")
    try:
        _, key = create_api_key(store, "ann")
        store.create_run(Run(id="ann-run", name="ann's run", owner="ann"))
        store.create_run(Run(id="bo-run", name="bo's run", owner="bo"))
        client = TestClient(create_app(store, Settings(auth="on")))
        refused = client.get("/")
        assert refused.status_code == 401 and 'action="/login"' in refused.text
        signed = client.post("/login", data={"key": key, "next": "/runs/ann-run"},
                             follow_redirects=False)
        assert signed.status_code == 303 and signed.headers["location"] == "/runs/ann-run"
        assert "httponly" in signed.headers["set-cookie"].lower()
        runs = client.get("/").text
        assert "ann&#39;s run" in runs and "bo&#39;s run" not in runs
        assert client.get("/runs/bo-run").status_code == 404
        # Signed in, a form POST must show it comes from this server (browsers send Origin).
        assert client.post("/login", data={"key": "pwk_wrong"},
                           headers={"Origin": "http://testserver"}).status_code == 401
    finally:
        store.close()


def test_prediction_set_pages_list_items_and_diff_versions(data: dict[str, Any]) -> None:
    from predwatch.sets import read_items

    store, client = data["store"], data["client"]
    first = [{"prompt": f"Q{i}?", "completion": f"A{i}", "tags": ["basic"]} for i in range(3)]
    second = [first[0], {"prompt": "Q1?", "completion": "A1 changed"},
              {"prompt": "<script>x()</script> new?", "completion": "new"}]
    store.create_set_version("golden", read_items(first), description="first cut")
    store.create_set_version("golden", read_items(second))

    listing = client.get("/sets")
    assert listing.status_code == 200 and 'data-set="golden"' in listing.text
    assert ">v2<" in listing.text and 'href="/sets"' in listing.text  # the nav shows sets

    latest = client.get("/sets/golden").text
    assert len(rows(latest, "set-items-table")) == 3 and "v2" in latest
    assert "&lt;script&gt;x()&lt;/script&gt;" in latest and "<script>x()" not in latest
    old = client.get("/sets/golden/versions/1").text
    assert len(rows(old, "set-items-table")) == 3 and '<span class="tag">basic</span>' in old

    diff = client.get("/sets/golden/diff").text  # default: the last two versions
    api = client.get("/api/sets/golden/diff?a=1&b=2").json()
    for key in ("added", "removed", "changed"):
        count = re.search(rf'data-count="{key}"><div class="label">\w+</div>'
                          rf'<div class="value[^"]*">(\d+)<', diff).group(1)
        assert int(count) == len(api[key]), key
    assert "<ins>" in diff and "changed</ins>" in diff
    assert client.get("/sets/missing").status_code == 404


def test_answers_are_diffed_against_the_expected_answer_everywhere(data: dict[str, Any]) -> None:
    client, store, ids = data["client"], data["store"], data["ids"]
    candidate = ids["candidate"]
    table = client.get(f"/runs/{candidate}").text
    bob = next(r for r in rows(table) if "name bob" in r)
    # bob's answer lost its closing brace and got the wrong age: the diff says so
    answer_cell = re.search(r'<td class="mono-cell answer-cell">(.*?)</td>', bob, re.S).group(1)
    assert 'data-diff="expected"' in answer_cell
    assert "<del>" in answer_cell and "<ins>14</ins>" in answer_cell
    perfect = next(r for r in rows(table) if "name ada" in r)
    assert "data-same-as-expected" in perfect and 'data-diff="expected"' not in perfect
    worst = re.search(r'<ol class="worst-list">(.*?)</ol>', table, re.S).group(1)
    assert 'data-diff="expected"' in worst and "<ins>14</ins>" in worst
    prompt = next(p for p in store.point_predictions(ids["alpha"], 30) if "bob" in p.prompt)
    timeline = client.get(f"/runs/{ids['alpha']}/prompts/{prompt.prompt_id}").text
    assert timeline.count('class="vs-expected-block"') == 2  # steps 10 and 20 were wrong
    assert timeline.count("data-same-as-expected") == 1  # step 30 learned it
    assert f'title="{prompt.prompt_id}"' in timeline  # the tooltip is the id itself
    compare = client.get(f"/compare?run_a={ids['baseline']}&run_b={candidate}").text
    first = rows(compare, "compare-table")[0]
    assert "B vs expected" in first and "<ins>14</ins>" in first


def test_long_answers_are_clipped_but_open_in_full(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'long.db'}"
    truth = " ".join(f"word{i}" for i in range(200))  # ~1,400 characters
    answer = truth.replace("word150", "WRONG")
    run_id = _record(db, tmp_path, "long", [lambda s: answer],
                     samples=[{"prompt": "Say the words", "completion": truth}])
    store = open_store(db)
    try:
        client = TestClient(create_app(store, Settings()))
        html = client.get(f"/runs/{run_id}").text
        cell = re.search(r'<td class="mono-cell answer-cell">(.*?)</td>', html, re.S).group(1)
        assert '<details class="clip vs-expected">' in cell
        full = re.search(r'<div class="full mono" data-diff="expected"[^>]*>(.*?)</div>', cell,
                         re.S).group(1)
        assert "<del>word150</del><ins>WRONG</ins>" in full and "word199" in full
        worst = re.search(r'<ol class="worst-list">(.*?)</ol>', html, re.S).group(1)
        assert "word199" in worst  # the card holds the whole answer, not 200 characters
    finally:
        store.close()


def test_lowest_score_lists_only_imperfect_answers(data: dict[str, Any]) -> None:
    client, ids = data["client"], data["ids"]
    html = client.get(f"/runs/{ids['candidate']}").text
    worst = re.findall(r'<ol class="worst-list">(.*?)</ol>', html, re.S)
    # only bob's answer is wrong at the candidate's one point; the perfect ones are left out
    assert len(worst) == 1 and worst[0].count("<li>") == 1 and "name bob" in worst[0]
    api = client.get(f"/api/runs/{ids['candidate']}/worst?lens=lowest_score").json()["items"]
    assert all(w["prediction"]["exact_match"] != 1 for w in api)


def test_footer_shows_the_app_version_and_set_diffs_show_tags(data: dict[str, Any]) -> None:
    from predwatch import __version__
    from predwatch.sets import read_items

    store, client = data["store"], data["client"]
    store.create_set_version("tagged", read_items(
        [{"prompt": "T?", "completion": "t", "tags": ["old", "kept"]}]))
    store.create_set_version("tagged", read_items(
        [{"prompt": "T?", "completion": "t", "tags": ["kept", "new"]}]))
    page = client.get("/sets/tagged").text
    assert f'<footer class="footer">predwatch {__version__} · ' in page and 'version=' not in page
    diff = client.get("/sets/tagged/diff").text
    changed = rows(diff, "changed-table")
    assert len(changed) == 1 and "<code>tags</code>" in changed[0]
    assert '<del class="tag">old</del>' in changed[0] and '<ins class="tag">new</ins>' in changed[0]
    assert '<span class="tag">kept</span>' in changed[0]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Three runs of a learning-rate sweep (the config as the Trainer callback records it)."""
    tmp = tmp_path_factory.mktemp("sweep")
    db = f"sqlite:///{tmp / 'sweep.db'}"
    samples = [{"prompt": f"Say {i}", "completion": f"number {i}"} for i in range(4)]
    ids = {}
    answers: list[tuple[str, float, Any]] = [
        ("lr-high", 0.001, lambda s: "number 0"), ("lr-low", 0.00001, lambda s: "nothing"),
        ("lr-mid", 0.0001, None)]  # None: the expected answer
    for name, lr, answer in answers:
        recorder = Recorder({"sample_count": 4}, samples=samples, db=db, run_name=name,
                            model_name="fake-model", spool_dir=str(tmp / f"spool-{name}"),
                            run_config={"training_args": {"learning_rate": lr,
                                                          "num_train_epochs": 3,
                                                          "output_dir": "/tmp/x"},
                                        "lora": {"r": 8 if lr > 0.00005 else 16}})
        recorder.record(step=10, epoch=1.0, generator=FakeGenerator(answer))
        recorder.record(step=20, epoch=2.0, generator=FakeGenerator(answer))
        assert recorder.close() == 0
        ids[name] = recorder.run.id
    store = open_store(db)
    try:
        yield {"ids": ids, "store": store,
               "client": TestClient(create_app(store, Settings()))}
    finally:
        store.close()


def _run_names(html: str) -> list[str]:
    return re.findall(r'<a class="run-link" href="/runs/[^"]+">([^<]+)</a>', html)


def test_runs_table_has_hyperparameter_columns_sorted_and_filtered_on_the_server(
    sweep: dict[str, Any],
) -> None:
    client = sweep["client"]
    html = client.get("/").text
    params = re.findall(r'<th class="num param" data-param="([^"]+)">', html)
    assert params[:3] == ["learning_rate", "num_train_epochs", "lora.r"]
    assert "output_dir" not in params  # a path is not a hyperparameter
    assert 'data-metric="exact_match"' in html and 'badge-status-running"' not in html
    by_lr = client.get("/?sort=hp.learning_rate").text
    assert _run_names(by_lr) == ["lr-low", "lr-mid", "lr-high"]
    assert _run_names(client.get("/?sort=-hp.learning_rate").text) == ["lr-high", "lr-mid",
                                                                      "lr-low"]
    by_cer = _run_names(client.get("/?sort=m.char_error_rate").text)
    assert by_cer[0] == "lr-mid" and by_cer[-1] == "lr-low"  # mid answers perfectly
    only = client.get("/?hp.lora.r=16").text
    assert _run_names(only) == ["lr-low"] and "<code>lora.r = 16</code>" in only
    assert _run_names(client.get("/?status=finished&sort=name").text) == ["lr-high", "lr-low",
                                                                         "lr-mid"]
    assert _run_names(client.get("/?status=running").text) == []
    # a cell links to the filter by its value
    assert 'href="/?hp.learning_rate=0.001"' in html or "hp.learning_rate=0.001" in html


def test_selected_runs_overlay_on_one_chart_and_two_compare(sweep: dict[str, Any]) -> None:
    client, ids = sweep["client"], sweep["ids"]
    html = client.get("/").text
    assert '<form method="get" action="/runs/overlay" class="runs-select">' in html
    assert f'name="run" value="{ids["lr-high"]}"' in html
    overlay = client.get(f"/runs/overlay?run={ids['lr-high']}&run={ids['lr-low']}")
    assert overlay.status_code == 200
    specs = json.loads(unescape(re.search(
        r'<script type="application/json" id="chart-specs">(.*?)</script>', overlay.text).group(1)))
    cer = next(s for s in specs if s["key"] == "char_error_rate")
    assert [s["label"] for s in cer["series"]] == ["lr-high", "lr-low"]
    trends = json.loads(unescape(re.search(
        r'<script type="application/json" id="trends-data">(.*?)</script>', overlay.text).group(1)))
    assert [t["step"] for t in trends] == [10, 20]
    assert trends[0]["averages"]["1:exact_match"] == 0.0
    assert len(rows(overlay.text, "compact overlay-table")) == 2
    assert f'/compare?run_a={ids["lr-high"]}&amp;run_b={ids["lr-low"]}"' in overlay.text
    compare = client.get(f"/compare?run={ids['lr-high']}&run={ids['lr-mid']}")
    assert compare.status_code == 200 and 'data-count="regressed"' in compare.text
    three = client.get(f"/compare?run={ids['lr-high']}&run={ids['lr-mid']}&run={ids['lr-low']}")
    assert three.status_code == 400 and "exactly two runs" in three.text
    assert client.get("/runs/overlay").status_code == 400


def test_a_silent_running_run_shows_as_stale_and_filters_so(sweep: dict[str, Any]) -> None:
    from datetime import timedelta

    from predwatch.records import utcnow

    old = utcnow() - timedelta(hours=5)
    sweep["store"].create_run(Run(id="silent-run", name="silent", created_at=old,
                                  last_seen_at=old))
    html = sweep["client"].get("/?status=stale").text
    assert _run_names(html) == ["silent"] and 'badge-status-stale"' in html


def test_ids_are_shown_in_full_and_run_pickers_name_them(data: dict[str, Any]) -> None:
    client, ids = data["client"], data["ids"]
    alpha = ids["alpha"]
    run = client.get(f"/runs/{alpha}").text
    assert f'data-copy="{alpha}">{alpha}</span>' in run
    assert 'class="skip-link" href="#predictions-title"' in run  # a way past the points table
    assert 'data-live-region="head-actions"' in run  # the compare button arrives live
    listing = client.get("/").text
    assert f'data-copy="{alpha}">{alpha}</div>' in listing
    picker = client.get("/compare").text
    assert f'<option value="{alpha}" >alpha · {alpha}</option>' in picker


def test_compare_hides_unchanged_orders_changed_first_and_pages_by_25(data: dict[str, Any]) -> None:
    client, ids = data["client"], data["ids"]
    wide = ids["wide"]  # 60 prompts, one point: compared with itself nothing changed
    same = client.get(f"/compare?run_a={wide}&run_b={wide}&step_a=10&step_b=10").text
    assert len(rows(same, "compare-table")) == 25 and "page 1 of 3" in same
    assert 'name="hide_unchanged"' in same
    hidden = client.get(f"/compare?run_a={wide}&run_b={wide}&step_a=10&step_b=10"
                        "&hide_unchanged=1").text
    assert rows(hidden, "compare-table") == [] and "0 shown" in hidden
    pair = f"/compare?run_a={ids['baseline']}&run_b={ids['candidate']}"
    only_changed = rows(client.get(pair + "&hide_unchanged=1").text, "compare-table")
    assert len(only_changed) == 1 and "name bob" in only_changed[0]  # the others are the same
    every = rows(client.get(pair).text, "compare-table")
    same = ['<span class="muted small">same</span>' in r for r in every]
    assert same == sorted(same) and same.count(False) == 1  # identical rows come last


def test_timeline_points_have_anchors(data: dict[str, Any]) -> None:
    client, store, alpha = data["client"], data["store"], data["ids"]["alpha"]
    prompt = store.point_predictions(alpha, 30)[0]
    html = client.get(f"/runs/{alpha}/prompts/{prompt.prompt_id}").text
    for step in (10, 20, 30):
        assert f'id="step-{step}"' in html and f'href="#step-{step}"' in html


def test_every_page_links_its_json_twin(data: dict[str, Any]) -> None:
    client, store, ids = data["client"], data["store"], data["ids"]
    alpha = ids["alpha"]
    prompt_id = store.point_predictions(alpha, 30)[0].prompt_id
    urls = ["/", f"/runs/{alpha}", f"/runs/{alpha}/prompts/{prompt_id}",
            f"/compare?run_a={ids['baseline']}&run_b={ids['candidate']}", "/sets",
            f"/runs/overlay?run={ids['baseline']}&run={ids['candidate']}"]
    for url in urls:
        html = client.get(url).text
        link = re.search(r'<a href="([^"]+)" data-json-twin>', html)
        assert link, url
        twin = client.get(unescape(link.group(1)))
        assert twin.status_code == 200, (url, twin.text[:200])
        assert twin.headers["content-type"].startswith("application/json"), url
    overlay = client.get(urls[-1]).text
    assert overlay.count('/points"') == 2  # one twin per run overlaid
    assert 'href="/docs#/estimate" data-api-docs' in client.get("/config").text


def test_the_sets_list_shows_a_description_given_with_a_later_version(
    data: dict[str, Any],
) -> None:
    from predwatch.sets import read_items

    store, client = data["store"], data["client"]
    store.create_set_version("described-later", read_items([{"prompt": "D?", "completion": "d"}]))
    store.create_set_version("described-later", read_items([{"prompt": "E?", "completion": "e"}]),
                             description="now with E")
    row = re.search(r'<tr data-set="described-later">(.*?)</tr>', client.get("/sets").text,
                    re.S).group(1)
    assert '<td class="description">now with E</td>' in row


# --- export: what a page shows, as CSV and JSON -----------------------------------------------
def _csv_rows(text: str) -> list[dict[str, str]]:
    import csv
    import io

    return list(csv.DictReader(io.StringIO(text)))


def _export_link(html: str, what: str, fmt: str) -> str:
    block = re.search(rf'data-export="{what}">(.*?)</p>', html, re.S)
    assert block, what
    link = re.search(rf'<a href="([^"]+)" download data-export-format="{fmt}">', block.group(1))
    assert link, (what, fmt)
    return unescape(link.group(1))


def test_predictions_export_is_the_table_on_screen(data: dict[str, Any]) -> None:
    client, store, ids = data["client"], data["store"], data["ids"]
    alpha = ids["alpha"]
    html = client.get(f"/runs/{alpha}?failed=1&sort=-char_error_rate").text
    link = _export_link(html, "predictions", "csv")
    assert link.startswith(f"/runs/{alpha}/predictions.csv?") and "step=30" in link  # pinned
    answer = client.get(link)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    got = _csv_rows(answer.text)
    shown = store.list_predictions(alpha, step=30, failed_only=True, sort="-char_error_rate",
                                   limit=50)
    assert [r["prompt_id"] for r in got] == [p.prompt_id for p in shown.items]
    assert len(got) == len(rows(html)) and got
    assert {"prompt", "prediction", "exact_match", "char_error_rate", "validation_errors"} <= set(
        got[0])
    assert any("<img src=x onerror=alert(1)>" == r["prediction"] for r in got)  # raw, not HTML
    as_json = client.get(_export_link(html, "predictions", "json")).json()
    assert [r["prompt_id"] for r in as_json] == [r["prompt_id"] for r in got]
    assert list(as_json[0]) == list(got[0])  # the same columns
    assert isinstance(as_json[0]["validation_errors"], list)


def test_predictions_export_follows_the_page(data: dict[str, Any]) -> None:
    client, ids = data["client"], data["ids"]
    wide = ids["wide"]
    first = client.get(f"/runs/{wide}/predictions.json").json()
    second = client.get(f"/runs/{wide}/predictions.json?page=2").json()
    assert len(first) == 50 and len(second) == 10
    assert {r["sample_index"] for r in first}.isdisjoint({r["sample_index"] for r in second})
    assert client.get(f"/runs/{wide}/predictions.xml").status_code == 400


def test_worst_compare_and_runs_exports_are_what_their_pages_list(data: dict[str, Any]) -> None:
    client, ids = data["client"], data["ids"]
    alpha = ids["alpha"]
    html = client.get(f"/runs/{alpha}").text
    worst = client.get(_export_link(html, "worst samples", "json")).json()
    assert len(worst) == html.count('<div class="worst-head">') and worst
    assert {w["lens"] for w in worst} == {"lowest_score"}

    url = f"/compare?run_a={ids['baseline']}&run_b={ids['candidate']}&hide_unchanged=1"
    html = client.get(url).text
    compared = client.get(_export_link(html, "compared prompts", "json")).json()
    assert [r["verdict"] for r in compared] == ["regressed"]  # unchanged ones hidden too
    assert "name bob" in compared[0]["prompt"] and "delta_char_error_rate" in compared[0]
    html = client.get(url.replace("&hide_unchanged=1", "")).text
    every = _csv_rows(client.get(_export_link(html, "compared prompts", "csv")).text)
    assert len(every) == len(rows(html, "compare-table")) == len(SAMPLES)
    assert every[0]["verdict"] == "regressed" and {r["verdict"] for r in every[1:]} == {"same"}

    html = client.get("/?q=bulk").text
    listed = client.get(_export_link(html, "runs", "csv"))
    names = [r["name"] for r in _csv_rows(listed.text)]
    assert names == _run_names(html) and len(names) == 24
    assert "jobs_failed" in _csv_rows(listed.text)[0]


def test_every_section_export_links_its_api_twin(data: dict[str, Any]) -> None:
    client, ids = data["client"], data["ids"]
    for url in (f"/runs/{ids['alpha']}", "/",
                f"/compare?run_a={ids['baseline']}&run_b={ids['candidate']}"):
        html = client.get(url).text
        links = re.findall(r'<a href="([^"]+)" data-api-twin>', html)
        assert links, url
        for link in links:
            twin = client.get(unescape(link))
            assert twin.status_code == 200, (url, link, twin.text[:200])
            assert twin.headers["content-type"].startswith("application/json")


def test_timeline_hides_unchanged_answers_and_pages_by_25(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'long.db'}"
    steps = list(range(10, 410, 10))  # 40 evaluation points
    answers = [(lambda s, i=i: "old" if i < 30 else f"new {i}") for i in range(len(steps))]
    run_id = _record(db, tmp_path, "long", answers, samples=[{"prompt": "p", "completion": "x"}],
                     steps=steps)
    store = open_store(db)
    try:
        client = TestClient(create_app(store, Settings()))
        prompt_id = store.point_predictions(run_id, 10)[0].prompt_id
        url = f"/runs/{run_id}/prompts/{prompt_id}"
        first = client.get(url).text
        assert len(re.findall(r'<li class="entry', first)) == 25 and "page 1 of 2" in first
        second = client.get(url + "?page=2").text
        assert len(re.findall(r'<li class="entry', second)) == 15
        # a diff on page 2 is against the answer before it, on page 1 (step 300 -> 310)
        assert re.search(r'id="step-310".*?<del>old</del>', second, re.S)
        assert 'id="step-320"' in client.get(url + "?at=320").text  # the page holding a step
        hidden = client.get(url + "?hide_unchanged=1").text
        shown = re.findall(r'id="step-(\d+)"', hidden)
        # the first answer, then every change (steps 310..400)
        assert shown == ["10"] + [str(s) for s in range(310, 410, 10)], shown
        assert 'data-expand-scope="timeline"' in hidden and "data-expand-tools" in hidden
    finally:
        store.close()


def test_compare_rows_and_evaluation_points_have_anchors(data: dict[str, Any]) -> None:
    client, ids = data["client"], data["ids"]
    html = client.get(f"/compare?run_a={ids['baseline']}&run_b={ids['candidate']}").text
    anchors = re.findall(r'<tr [^>]*id="(prompt-[0-9a-f]+)"', html)
    assert len(anchors) == len(SAMPLES) and len(set(anchors)) == len(anchors)
    assert f'href="#{anchors[0]}"' in html
    run = client.get(f"/runs/{ids['alpha']}").text
    assert all(f'id="point-{s}"' in run for s in (10, 20, 30))


def test_the_headline_follows_the_picked_point_and_states_units(data: dict[str, Any]) -> None:
    client, store, ids = data["client"], data["store"], data["ids"]
    alpha = ids["alpha"]
    trends = {t.step: t for t in store.trends(alpha)}

    def card(html: str, name: str) -> str:
        return re.search(rf'data-stat="{name}">.*?<div class="value">(.*?)</div>\s*'
                         r'<div class="sub">(.*?)</div>', html, re.S).group(1, 2)

    latest = client.get(f"/runs/{alpha}").text
    value, sub = card(latest, "exact_match")
    assert value.strip() == f"{trends[30].averages['exact_match'] * 100:.1f}%"
    change = (trends[30].averages["exact_match"] - trends[10].averages["exact_match"]) * 100
    assert f"{change:+.1f} pts" in sub and "percentage points" in sub  # the unit, and its title
    picked = client.get(f"/runs/{alpha}?step=20").text
    value, sub = card(picked, "exact_match")
    assert value.strip() == f"{trends[20].averages['exact_match'] * 100:.1f}%"
    assert 'data-headline-step="20"' in picked and "shown: step 20" in picked
    assert 'data-shown-step="20"' in picked
    cer_value, _ = card(picked, "char_error_rate")
    assert cer_value.strip() == f"{trends[20].averages['char_error_rate']:.3f}"
    specs = json.loads(unescape(re.search(r'id="chart-specs">(.*?)</script>', latest,
                                          re.S).group(1)))
    axes = {s["key"]: s.get("axis") for s in specs}
    assert axes["exact_match"] == "Exact match (%)"
    assert axes["char_error_rate"] == "Char error rate (0–1)"
    assert axes["validation"] == "Pass rate (%)"
    compare = client.get(f"/compare?run_a={ids['baseline']}&run_b={ids['candidate']}").text
    assert re.search(r'title="change of exact match in percentage points">[−+-]\d+\.\d pts',
                     compare)
