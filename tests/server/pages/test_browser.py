"""The web UI in a real browser: Debian's Chromium driven by playwright against a real
``predwatch serve`` process, on a database filled by a real recording of a tiny model.

The database is built once for the module: a tiny Llama is fine-tuned for a few steps while a
``Recorder`` records its answers at three evaluation points (so answers change and some start to
pass validation), plus a baseline run and a candidate run with one planted regression. A
screenshot of every page goes to ``test-artifacts/ui/``.

Without ``/usr/bin/chromium`` the module is skipped, unless ``PREDWATCH_REQUIRE_BROWSER=1``
(CI), where it fails. Playwright's own browsers are never downloaded.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import pytest

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update"]

LOCAL_HOSTS = ("127.0.0.1", "localhost")

pytestmark = pytest.mark.browser


def _unavailable(message: str) -> NoReturn:
    """Skip the module, or fail it where a browser is required (CI)."""
    if os.environ.get("PREDWATCH_REQUIRE_BROWSER") == "1":
        pytest.fail(f"PREDWATCH_REQUIRE_BROWSER=1 but {message}", pytrace=False)
    pytest.skip(message, allow_module_level=True)


if not Path(CHROMIUM).exists():
    _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
try:
    from playwright import sync_api
except ImportError:
    _unavailable("playwright is not installed (pip install 'predwatch[dev]')")
pytest.importorskip("torch")

# Imported only once the guards above have passed (the module may be skipped before them).
import httpx  # noqa: E402

from predwatch.generation.fake import FakeGenerator  # noqa: E402
from predwatch.recording.recorder import Recorder  # noqa: E402
from predwatch.storage import open_store  # noqa: E402
from predwatch.testing import start_server  # noqa: E402

expect = sync_api.expect
HOSTILE = ("<script>window.__pwned = 1</script>"
           "<img src=x onerror=\"window.__pwned = 2\"> say <b>hi</b>")
PEOPLE = [("ada", 36), ("bob", 41), ("eve", 29), ("max", 52), ("zoe", 23), ("ian", 64)]
SAMPLES = [
    {"prompt": f"Extract: name {n}, age {a}\nJSON:",
     "completion": json.dumps({"name": n, "age": a})}
    for n, a in PEOPLE
] + [{"prompt": HOSTILE, "completion": '{"greeting": "hi"}'}]
STEPS = (0, 15, 30)
HTTP_STATUS = re.compile(r"responded with a status of \d+")


def record_tiny_finetune(db: str, spool: Path, model: Any, tokenizer: Any) -> str:
    """Fine-tune the tiny model on the samples; record its answers at each of ``STEPS``."""
    import torch

    recorder = Recorder(
        {"sample_count": len(SAMPLES), "max_new_tokens": 16, "validators": {"json_parse": True}},
        samples=SAMPLES, db=db, run_name="tiny-finetune", model_name="tiny-llama",
        spool_dir=str(spool),
    )
    texts = [s["prompt"] + " " + s["completion"] + tokenizer.eos_token for s in SAMPLES]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3)
    torch.manual_seed(0)
    step = 0
    for target in STEPS:
        model.train()
        while step < target:
            model(**batch, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            step += 1
        assert recorder.record(model, tokenizer, step=step, epoch=step / 20) is not None
    assert recorder.close() == 0
    return recorder.run.id


def record_pair(db: str, spool: Path) -> tuple[str, str]:
    """A perfect baseline and a candidate that regressed on exactly one prompt (bob)."""
    config = {"sample_count": 6, "validators": {"json_parse": True}}

    def planted(sample: Any) -> str:
        return '{"name": "bob", "age": 14' if "bob" in sample.prompt else sample.ground_truth

    ids = []
    for name, answer in (("baseline", None), ("candidate", planted)):
        recorder = Recorder(config, samples=SAMPLES[:6], db=db, run_name=name, model_name="fake",
                            spool_dir=str(spool))
        recorder.record(step=100, epoch=5.0, generator=FakeGenerator(answer))
        assert recorder.close() == 0
        ids.append(recorder.run.id)
    return ids[0], ids[1]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory, tiny_model: Any) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("browser")
    url = f"sqlite:///{tmp / 'ui.db'}"
    model, tokenizer = tiny_model
    tiny = record_tiny_finetune(url, tmp / "spool", copy.deepcopy(model), tokenizer)
    baseline, candidate = record_pair(url, tmp / "spool")
    return {"url": url, "tiny": tiny, "baseline": baseline, "candidate": candidate}


class Server:
    """The module's ``predwatch serve`` process; a test may replace it (same port, same URL)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    @property
    def url(self) -> str:
        return str(self.handle.url)


@pytest.fixture(scope="module")
def server(db: dict[str, Any]) -> Iterator[Server]:
    box = Server(start_server(db["url"]))
    try:
        yield box
    finally:
        box.handle.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@contextmanager
def guarded_page(browser: Any, **context_options: Any) -> Iterator[Any]:
    """A page in a fresh context that fails the test on a script error, a failed asset or API
    request, or any request leaving this machine."""
    context = browser.new_context(**{"viewport": {"width": 1400, "height": 900},
                                     **context_options})
    problems: list[str] = []

    def offline(route: Any) -> None:
        # The UI must work offline: every request goes to the predwatch server on this machine.
        url = urlsplit(route.request.url)
        if url.scheme in ("http", "https", "ws", "wss") and url.hostname not in LOCAL_HOSTS:
            problems.append(f"request off the machine: {route.request.url}")
            route.abort()
        else:
            route.continue_()

    context.route("**/*", offline)
    page = context.new_page()
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    # Pages answered 404/422 on purpose log a console error; a failed asset or API request is
    # caught by URL instead.
    page.on("console", lambda m: problems.append(m.text)
            if m.type == "error" and not HTTP_STATUS.search(m.text) else None)
    def check(response: Any) -> None:
        if response.status >= 400 and ("/static/" in response.url or "/api/" in response.url):
            problems.append(f"{response.status} {response.url}")

    page.on("response", check)
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        context.close()
    assert not problems, problems  # no script errors, no failed requests (e.g. a missing asset)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    with guarded_page(browser) as page:
        yield page


def snap(page: Any, path: Path) -> None:
    """A full-page screenshot taken from the top (so the sticky top bar stays on top)."""
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=True)


@pytest.fixture(scope="module")
def shots(artifacts_dir: Path) -> Path:
    folder = artifacts_dir / "ui"
    folder.mkdir(exist_ok=True)
    return folder


def test_runs_page_lists_runs_and_opens_one(page: Any, server: Server, db: dict[str, Any],
                                            shots: Path) -> None:
    page.goto(server.url + "/")
    table = page.locator("table.runs-table tbody tr")
    expect(table).to_have_count(3)
    expect(page.locator(f'tr[data-run-id="{db["tiny"]}"]')).to_contain_text("step 30")
    expect(page.locator(f'tr[data-run-id="{db["tiny"]}"] svg.spark')).to_be_visible()
    snap(page, shots / "runs.png")
    page.get_by_role("link", name="tiny-finetune").click()
    expect(page).to_have_url(f"{server.url}/runs/{db['tiny']}")
    expect(page.locator("h1")).to_contain_text("tiny-finetune")
    expect(page.locator("[data-live-status]")).to_have_attribute("data-state", "live")
    snap(page, shots / "run.png")


def test_charts_hold_one_point_per_evaluation_point(page: Any, server: Server,
                                                    db: dict[str, Any]) -> None:
    page.goto(f"{server.url}/runs/{db['tiny']}")
    figures = page.locator("figure[data-chart]")
    expect(figures).to_have_count(6)
    for key in ("exact_match", "char_error_rate", "word_overlap", "token_f1", "validation", "cost"):
        expect(page.locator(f'figure[data-chart="{key}"]')).to_have_attribute("data-points", "3")
        expect(page.locator(f'figure[data-chart="{key}"] canvas')).to_be_visible()
    steps = page.evaluate("() => Object.fromEntries(Object.entries(window.predwatchCharts)"
                          ".map(([k, u]) => [k, Array.from(u.data[0])]))")
    assert steps == {key: list(STEPS) for key in steps} and len(steps) == 6
    # The CER chart carries the min-max band: mean, min and max series.
    assert page.evaluate("window.predwatchCharts.char_error_rate.series.length") == 4


def test_filter_to_failed_answers(page: Any, server: Server, db: dict[str, Any],
                                  shots: Path) -> None:
    store = open_store(db["url"])
    try:
        failed = store.list_predictions(db["tiny"], step=30, failed_only=True).total
    finally:
        store.close()
    assert failed
    page.goto(f"{server.url}/runs/{db['tiny']}")
    rows = page.locator("table.predictions-table tbody tr")
    expect(rows).to_have_count(len(SAMPLES))
    page.get_by_label("failed only").check()
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(f"{server.url}/runs/{db['tiny']}?step=&failed=1&validator=&q=&sort=")
    expect(rows).to_have_count(failed)
    expect(rows.locator(".badge-fail")).to_have_count(failed)
    first = rows.first.locator("details.why")
    first.locator("summary").click()
    expect(first.locator(".issues")).to_contain_text("json_parse")
    snap(page, shots / "run-failed-only.png")


def test_prompt_timeline_shows_a_word_diff(page: Any, server: Server, db: dict[str, Any],
                                           shots: Path) -> None:
    page.goto(f"{server.url}/runs/{db['tiny']}")
    first_row = page.locator("table.predictions-table tbody tr").first
    first_row.get_by_role("link", name="timeline →").click()
    expect(page.locator("h1")).to_have_text("Prompt timeline")
    entries = page.locator("ol.timeline > li")
    expect(entries).to_have_count(len(STEPS))
    # The model learned between points, so later answers are diffs against earlier ones.
    assert (page.locator(".timeline .diff ins").count()
            + page.locator(".timeline .diff del").count()) > 0
    expect(page.locator(".badge-best")).to_have_count(1)
    snap(page, shots / "timeline.png")


def test_compare_two_runs_finds_the_planted_regression(page: Any, server: Server,
                                                       db: dict[str, Any], shots: Path) -> None:
    page.goto(server.url + "/compare")
    page.locator('select[name="run_a"]').select_option(db["baseline"])  # submits the form
    expect(page).to_have_url(f"{server.url}/compare?run_a={db['baseline']}&step_a=&run_b=&step_b="
                             "&tolerance=0.05")
    # The URL changes when the new page commits; its script (which makes the selects submit)
    # runs at load.
    page.wait_for_load_state("load")
    page.locator('select[name="run_b"]').select_option(db["candidate"])
    expect(page.locator('[data-count="regressed"] .value')).to_have_text("1")
    first = page.locator("table.compare-table tbody tr").first
    expect(first).to_contain_text("regressed")
    expect(first).to_contain_text("name bob")
    expect(first.locator(".answer-b ins")).to_contain_text("14")
    snap(page, shots / "compare.png")


def test_config_builder_validates_with_the_library(page: Any, server: Server, shots: Path) -> None:
    page.goto(server.url + "/config")
    page.get_by_role("radio", name="every N steps").check()
    page.locator('input[name="step_interval"]').fill("3")
    page.get_by_role("button", name="Check").click()
    expect(page.locator('.field-error[data-field="step_interval"]')).to_contain_text("at least")
    page.locator('input[name="step_interval"]').fill("50")
    page.get_by_role("link", name="object").click()  # fills the schema example in place
    page.get_by_role("button", name="Check").click()
    expect(page.locator(".ok-banner")).to_contain_text("Valid config")
    expect(page.locator("#config-python")).to_contain_text("PredictionsCallback")
    snap(page, shots / "config.png")


def test_a_prompt_with_html_renders_as_text(page: Any, server: Server, db: dict[str, Any]) -> None:
    page.goto(f"{server.url}/runs/{db['tiny']}?q=say")
    cell = page.locator("table.predictions-table tbody tr td.prompt-cell").first
    expect(cell).to_contain_text('<script>window.__pwned = 1</script><img src=x')
    assert page.evaluate("window.__pwned") is None
    assert page.locator("table.predictions-table img").count() == 0


def test_pages_work_without_javascript(browser: Any, server: Server, db: dict[str, Any],
                                       shots: Path) -> None:
    context = browser.new_context(java_script_enabled=False,
                                  viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{server.url}/runs/{db['tiny']}")
        expect(page.locator("table.points-table tbody tr")).to_have_count(len(STEPS))
        expect(page.locator("table.predictions-table tbody tr")).to_have_count(len(SAMPLES))
        page.locator('select[name="step"]').select_option("0")
        page.get_by_role("button", name="Apply").click()
        expect(page.locator("#predictions-title")).to_contain_text("at step 0")
        snap(page, shots / "run-no-javascript.png")
    finally:
        context.close()


def test_prediction_set_pages(page: Any, server: Server, shots: Path) -> None:
    v1 = [{"prompt": f"Capital of {c}?", "completion": a, "tags": ["geo"]}
          for c, a in (("France", "Paris"), ("Peru", "Lima"), ("Japan", "Tokyo"))]
    v2 = [v1[0], {"prompt": "Capital of Peru?", "completion": "Lima, Peru", "tags": ["geo"]},
          {"prompt": "Capital of <i>Italy</i>?", "completion": "Rome", "tags": ["geo", "new"]}]
    for items in (v1, v2):
        created = httpx.post(server.url + "/api/sets", json={"name": "capitals", "items": items},
                             timeout=10)
        assert created.status_code == 201, created.text
    page.goto(server.url + "/sets")
    snap(page, shots / "sets.png")
    page.get_by_role("link", name="capitals", exact=True).click()
    expect(page.locator("table.set-items-table tbody tr")).to_have_count(3)
    expect(page.locator("table.set-items-table")).to_contain_text("Capital of <i>Italy</i>?")
    snap(page, shots / "set.png")
    page.get_by_role("link", name="diff vs v1").click()
    expect(page.locator('[data-count="changed"] .value')).to_have_text("1")
    expect(page.locator('[data-count="added"] .value')).to_have_text("1")
    expect(page.locator('[data-count="removed"] .value')).to_have_text("1")
    expect(page.locator("table.changed-table ins")).to_contain_text("Peru")
    snap(page, shots / "set-diff.png")


def test_unknown_pages_answer_an_error_page(page: Any, server: Server, shots: Path) -> None:
    response = page.goto(server.url + "/runs/no-such-run")
    assert response is not None and response.status == 404
    expect(page.locator(".error-message")).to_contain_text("no-such-run")
    page.screenshot(path=str(shots / "error.png"))


def _post_point(server_url: str, token: str, job_id: str, step: int, passing: int,
                samples: range = range(4)) -> None:
    """Ingest answers of one evaluation point (four by default), the first ``passing`` of them
    valid, via the API; the others fail validation with an error."""
    predictions = [
        {"step": step, "epoch": step / 10, "sample_index": i, "prompt": f"live prompt {i}",
         "ground_truth": f"answer {i}", "prediction": f"answer {i}" if i < passing else "nope",
         "exact_match": 1.0 if i < passing else 0.0, "char_error_rate": 0.0 if i < passing else 0.9,
         "validation_pass": i < passing, "completion_tokens": 3, "latency_ms": 12.0,
         "validation_errors": [] if i < passing else [
             {"validator": "regex", "message": f"answer {i} does not match"}]}
        for i in samples
    ]
    response = httpx.post(server_url + "/api/training/local/predictions", json={
        "job_id": job_id, "predictions": predictions,
    }, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 200, response.text


def _new_run(server_url: str, name: str) -> tuple[str, str]:
    created = httpx.post(server_url + "/api/runs", json={"name": name, "model_name": "live"},
                         timeout=10)
    assert created.status_code == 201, created.text
    return created.json()["job_id"], created.json()["token"]


def test_new_evaluation_points_appear_without_reload(page: Any, server: Server,
                                                     shots: Path) -> None:
    job_id, token = _new_run(server.url, "live-run")
    page.goto(f"{server.url}/runs/{job_id}")
    expect(page.locator(".headline")).to_contain_text("No evaluation points yet")
    expect(page.locator("[data-live-status]")).to_have_attribute("data-state", "live")
    page.evaluate("window.__sameDocument = true")  # gone if the page reloaded

    _post_point(server.url, token, job_id, step=10, passing=1)
    rows = page.locator("table.predictions-table tbody tr")
    expect(rows).to_have_count(4)
    expect(page.locator("#predictions-title")).to_contain_text("at step 10")
    expect(page.locator('figure[data-chart="exact_match"]')).to_have_attribute("data-points", "1")

    _post_point(server.url, token, job_id, step=20, passing=3)
    expect(page.locator("#predictions-title")).to_contain_text("at step 20")
    expect(page.locator("table.points-table tbody tr")).to_have_count(2)
    expect(page.locator('figure[data-chart="validation"]')).to_have_attribute("data-points", "2")
    expect(page.locator('[data-stat="validation_pass"] .value')).to_have_text("75.0%")
    assert page.evaluate("window.__sameDocument") is True
    snap(page, shots / "run-live.png")


def test_a_live_update_keeps_expanded_rows_open(page: Any, server: Server) -> None:
    job_id, token = _new_run(server.url, "live-details")
    page.goto(f"{server.url}/runs/{job_id}")
    expect(page.locator("[data-live-status]")).to_have_attribute("data-state", "live")
    _post_point(server.url, token, job_id, step=10, passing=2)  # rows 2 and 3 fail
    rows = page.locator("table.predictions-table tbody tr")
    expect(rows).to_have_count(4)
    why = rows.nth(3).locator("details.why")
    why.locator("summary").click()
    expect(why.locator(".issues")).to_contain_text("answer 3 does not match")
    # The rest of the same evaluation point arrives in a second request.
    _post_point(server.url, token, job_id, step=10, passing=2, samples=range(4, 6))
    expect(rows).to_have_count(6)
    expect(rows.nth(3).locator("details.why")).to_have_attribute("open", "")
    expect(rows.nth(3).locator(".issues")).to_be_visible()
    expect(rows.nth(2).locator("details.why")).not_to_have_attribute("open", "")


def test_live_updates_resume_after_the_server_restarts(browser: Any, server: Server,
                                                       db: dict[str, Any]) -> None:
    job_id, token = _new_run(server.url, "reconnect-run")
    context = browser.new_context()  # its own page: refused connections log console errors
    try:
        page = context.new_page()
        page.goto(f"{server.url}/runs/{job_id}")
        status = page.locator("[data-live-status]")
        expect(status).to_have_attribute("data-state", "live")
        page.evaluate("window.__sameDocument = true")
        port = server.handle.port
        server.handle.kill()  # the stream drops mid-connection
        expect(status).to_have_attribute("data-state", "reconnecting")
        server.handle = start_server(db["url"], port=port)  # later tests get the new process
        expect(status).to_have_attribute("data-state", "live", timeout=30_000)
        _post_point(server.url, token, job_id, step=10, passing=2)
        expect(page.locator("table.predictions-table tbody tr")).to_have_count(4)
        assert page.evaluate("window.__sameDocument") is True
    finally:
        context.close()


def test_answers_show_their_diff_against_the_expected_answer(page: Any, server: Server,
                                                             db: dict[str, Any],
                                                             shots: Path) -> None:
    page.goto(f"{server.url}/runs/{db['candidate']}")
    bob = page.locator("table.predictions-table tbody tr", has_text="name bob")
    diff = bob.locator('td.answer-cell [data-diff="expected"]')
    expect(diff.locator("ins")).to_have_text("14")
    expect(diff.locator("del").first).to_be_visible()
    ada = page.locator("table.predictions-table tbody tr", has_text="name ada")
    expect(ada.locator("[data-same-as-expected]")).to_be_visible()
    expect(page.locator(".worst-list li")).to_have_count(1)  # only the imperfect answer
    snap(page, shots / "answers-vs-expected.png")


def test_the_compare_button_appears_when_a_second_point_arrives(page: Any,
                                                                server: Server) -> None:
    job_id, token = _new_run(server.url, "live-compare")
    page.goto(f"{server.url}/runs/{job_id}")
    expect(page.locator("[data-live-status]")).to_have_attribute("data-state", "live")
    _post_point(server.url, token, job_id, step=10, passing=1)
    expect(page.locator("#predictions-title")).to_contain_text("at step 10")
    expect(page.locator("[data-compare-previous]")).to_have_count(0)
    _post_point(server.url, token, job_id, step=20, passing=2)
    button = page.locator("[data-compare-previous]")
    expect(button).to_have_text("Compare step 10 → 20")
    button.click()
    expect(page.locator('[data-count="paired"] .value')).to_have_text("4")


def test_the_runs_list_updates_live_and_overlays_selected_runs(page: Any, server: Server,
                                                               db: dict[str, Any],
                                                               shots: Path) -> None:
    page.goto(server.url + "/")
    page.evaluate("window.__sameDocument = true")
    page.locator(f'tr[data-run-id="{db["baseline"]}"] input[name="run"]').check()
    job_id, _token = _new_run(server.url, "arrives-while-watching")
    expect(page.locator(f'tr[data-run-id="{job_id}"]')).to_be_visible(timeout=30_000)
    assert page.evaluate("window.__sameDocument") is True
    # what the reader ticked survives the refresh
    expect(page.locator(f'tr[data-run-id="{db["baseline"]}"] input[name="run"]')).to_be_checked()
    page.locator(f'tr[data-run-id="{db["candidate"]}"] input[name="run"]').check()
    page.get_by_role("button", name="Overlay trend charts of the selected").click()
    expect(page.locator('figure[data-chart="exact_match"] canvas')).to_be_visible()
    # x, then one series per run
    assert page.evaluate("window.predwatchCharts.exact_match.series.length") == 3
    snap(page, shots / "overlay.png")
    page.go_back()
    page.locator(f'tr[data-run-id="{db["baseline"]}"] input[name="run"]').check()
    page.locator(f'tr[data-run-id="{db["candidate"]}"] input[name="run"]').check()
    page.get_by_role("button", name="Compare the two selected").click()
    expect(page.locator('[data-count="regressed"] .value')).to_have_text("1")


def test_dark_mode_follows_the_system_setting(browser: Any, server: Server, db: dict[str, Any],
                                              shots: Path) -> None:
    with guarded_page(browser, color_scheme="dark") as page:
        for name, url in (("runs", "/"), ("run", f"/runs/{db['tiny']}"),
                          ("compare", f"/compare?run_a={db['baseline']}&run_b={db['candidate']}")):
            page.goto(server.url + url)
            background = page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert background == "rgb(13, 17, 23)", (name, background)
            color = page.evaluate("getComputedStyle(document.body).color")
            assert color == "rgb(230, 237, 243)", (name, color)
            snap(page, shots / f"dark-{name}.png")


def test_a_390_px_phone_gets_a_usable_layout(browser: Any, server: Server, db: dict[str, Any],
                                             shots: Path) -> None:
    with guarded_page(browser, viewport={"width": 390, "height": 844}) as page:
        for name, url in (("runs", "/"), ("run", f"/runs/{db['candidate']}"),
                          ("compare", f"/compare?run_a={db['baseline']}&run_b={db['candidate']}")):
            page.goto(server.url + url)
            # nothing but the tables (which scroll inside their frame) is wider than the screen
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, (name, width)
            nav = page.locator(".topnav").bounding_box()
            assert nav is not None and nav["x"] + nav["width"] <= 390, (name, nav)
            snap(page, shots / f"phone-{name}.png")
        page.goto(f"{server.url}/runs/{db['candidate']}")
        cell = page.locator("table.predictions-table td.answer-cell").first.bounding_box()
        assert cell is not None and cell["width"] >= 150, cell  # not squeezed to ~30 px


def test_ids_are_shown_in_full_with_a_copy_button(browser: Any, server: Server,
                                                  db: dict[str, Any]) -> None:
    with guarded_page(browser, permissions=["clipboard-read", "clipboard-write"]) as page:
        page.goto(f"{server.url}/runs/{db['tiny']}")
        id_node = page.locator(f'.meta [data-copy="{db["tiny"]}"]')
        expect(id_node).to_have_text(db["tiny"])
        button = page.locator(".meta button.copy")
        button.click()
        expect(button).to_have_text("copied")
        assert page.evaluate("navigator.clipboard.readText()") == db["tiny"]


# --- issue #16: charts, scale, export, ids; issue #13: jobs -----------------------------------
def _point_position(page: Any, chart: str, step: int) -> tuple[float, float]:
    """Where on the screen ``chart``'s point at ``step`` is (its plotting area's middle row)."""
    x, y = page.evaluate("""([key, step]) => {
        const u = window.predwatchCharts[key];
        const r = u.over.getBoundingClientRect();
        return [r.left + u.valToPos(step, "x"), r.top + r.height / 2];
    }""", [chart, step])
    return float(x), float(y)


def test_clicking_a_chart_point_selects_that_step_in_place(page: Any, server: Server,
                                                           db: dict[str, Any],
                                                           shots: Path) -> None:
    page.goto(f"{server.url}/runs/{db['tiny']}")
    expect(page.locator('figure[data-chart="exact_match"]')).to_have_attribute(
        "data-selected-step", str(STEPS[-1]))  # the point shown: the latest
    page.evaluate("window.__sameDocument = true")
    page.mouse.click(*_point_position(page, "exact_match", STEPS[1]))
    expect(page).to_have_url(f"{server.url}/runs/{db['tiny']}?step={STEPS[1]}")
    expect(page.locator("#predictions-title")).to_contain_text(f"at step {STEPS[1]}")
    expect(page.locator("[data-headline-step]")).to_have_attribute("data-headline-step",
                                                                   str(STEPS[1]))
    expect(page.locator(".headline")).to_contain_text(f"shown: step {STEPS[1]}")
    for key in ("exact_match", "char_error_rate", "validation", "cost"):  # the marker
        expect(page.locator(f'figure[data-chart="{key}"]')).to_have_attribute(
            "data-selected-step", str(STEPS[1]))
    expect(page.locator(f'table.points-table tr[data-step="{STEPS[1]}"]')).to_have_class(
        re.compile("selected"))
    expect(page.locator("#predictions-title")).to_be_focused()  # scrolled to, for keyboards too
    assert page.evaluate("document.getElementById('predictions-title')"
                         ".getBoundingClientRect().top") < 200
    assert page.evaluate("window.__sameDocument") is True
    snap(page, shots / "chart-selected-step.png")
    # the keyboard picks too: focus a chart, Home (the first point), Enter
    page.locator('figure[data-chart="char_error_rate"]').focus()
    page.keyboard.press("Home")
    page.keyboard.press("Enter")
    expect(page.locator("#predictions-title")).to_contain_text(f"at step {STEPS[0]}")
    page.go_back()  # back to the point picked before
    expect(page.locator("#predictions-title")).to_contain_text(f"at step {STEPS[1]}")
    expect(page.locator('figure[data-chart="exact_match"]')).to_have_attribute(
        "data-selected-step", str(STEPS[1]))
    assert page.evaluate("window.__sameDocument") is True


def test_smoothing_draws_a_smoothed_line_over_the_faint_raw_one(page: Any, server: Server,
                                                                db: dict[str, Any],
                                                                shots: Path) -> None:
    page.goto(f"{server.url}/runs/{db['tiny']}")
    slider = page.get_by_label("Smoothing")
    expect(slider).to_be_visible()
    assert page.evaluate("window.predwatchCharts.exact_match.series.length") == 2
    slider.focus()
    for _ in range(12):  # keyboard: 0.60
        page.keyboard.press("ArrowRight")
    expect(page.locator("[data-smoothing-value]")).to_have_text("0.60")
    expect(page.locator('figure[data-chart="exact_match"]')).to_have_attribute(
        "data-smoothing", "0.6")
    series = page.evaluate("window.predwatchCharts.exact_match.series.slice(1)"
                           ".map((s) => [s.label, s._stroke || s.stroke()])")
    assert [label for label, _ in series] == ["mean EM (raw)", "mean EM (smoothed)"], series
    assert "0.3)" in series[0][1], series  # the raw line stays, faint
    data = page.evaluate("Array.from(window.predwatchCharts.exact_match.data[2])")
    raw = page.evaluate("Array.from(window.predwatchCharts.exact_match.data[1])")
    assert data[0] == pytest.approx(raw[0]) and len(data) == len(STEPS)  # debiased start
    # CER keeps its min-max band and gains one smoothed line
    assert page.evaluate("window.predwatchCharts.char_error_rate.series.length") == 5
    assert page.evaluate("document.querySelector('figure[data-chart=exact_match] .u-legend')"
                         ".textContent").count("smoothed") == 1
    snap(page, shots / "chart-smoothing.png")
    page.reload()  # remembered in this browser
    expect(page.locator("[data-smoothing-value]")).to_have_text("0.60")
    page.evaluate("localStorage.removeItem('predwatch.smoothing')")


def test_compare_and_timeline_expand_and_collapse_all(page: Any, server: Server,
                                                      db: dict[str, Any], shots: Path) -> None:
    page.goto(f"{server.url}/compare?run_a={db['baseline']}&run_b={db['candidate']}")
    details = page.locator('[data-expand-scope="compare"] details')
    assert details.count() > 0
    tools = page.locator('[data-expand-tools="compare"]')
    tools.get_by_role("button", name="Expand all").click()
    assert page.evaluate("[...document.querySelectorAll('[data-expand-scope=compare] details')]"
                         ".every((d) => d.open)")
    snap(page, shots / "compare-expanded.png")
    tools.get_by_role("button", name="Collapse all").click()
    assert page.evaluate("[...document.querySelectorAll('[data-expand-scope=compare] details')]"
                         ".every((d) => !d.open)")
    # each row has an anchor of its own
    first = page.locator("table.compare-table tbody tr").first
    anchor = first.get_attribute("id")
    assert anchor and first.locator(f'a[href="#{anchor}"]').count() == 1

    page.goto(f"{server.url}/runs/{db['tiny']}")
    page.locator("table.predictions-table tbody tr").first.get_by_role(
        "link", name="timeline →").click()
    bodies = page.locator("ol.timeline .entry-body")
    expect(bodies.first).to_be_visible()
    page.locator('[data-expand-tools="timeline"]').get_by_role(
        "button", name="Collapse all").click()
    expect(bodies.first).to_be_hidden()
    expect(page.locator("ol.timeline .entry-head").first).to_be_visible()
    snap(page, shots / "timeline-collapsed.png")
    page.locator('[data-expand-tools="timeline"]').get_by_role(
        "button", name="Expand all").click()
    expect(bodies.first).to_be_visible()


def test_export_downloads_the_rows_on_screen(page: Any, server: Server,
                                             db: dict[str, Any]) -> None:
    import csv

    page.goto(f"{server.url}/runs/{db['tiny']}")
    page.get_by_label("failed only").check()
    page.get_by_role("button", name="Apply").click()
    shown = page.locator("table.predictions-table tbody tr").count()
    assert shown > 0
    box = page.locator('[data-export="predictions"]')
    with page.expect_download() as info:
        box.get_by_role("link", name="CSV").click()
    download = info.value
    assert download.suggested_filename.endswith(f"-step{STEPS[-1]}-predictions.csv")
    with open(download.path(), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == shown and all(r["validation_pass"] == "False" for r in rows)
    with page.expect_download() as info:
        box.get_by_role("link", name="JSON").click()
    assert len(json.loads(Path(info.value.path()).read_text())) == shown
    twin = box.get_by_role("link", name="API").get_attribute("href")
    assert twin and "failed_only=1" in twin
    body = httpx.get(server.url + twin, timeout=10).json()
    assert [r["prompt_id"] for r in body["predictions"]] == [r["prompt_id"] for r in rows]

    page.goto(f"{server.url}/compare?run_a={db['baseline']}&run_b={db['candidate']}"
              "&regressed_only=1")
    with page.expect_download() as info:
        page.locator('[data-export="compared prompts"]').get_by_role("link", name="JSON").click()
    compared = json.loads(Path(info.value.path()).read_text())
    assert [r["verdict"] for r in compared] == ["regressed"]
    page.goto(server.url + "/")
    with page.expect_download() as info:
        page.locator('[data-export="runs"]').get_by_role("link", name="CSV").click()
    with open(info.value.path(), newline="", encoding="utf-8") as f:
        ids = [r["id"] for r in csv.DictReader(f)]
    assert ids == page.locator("table.runs-table tbody tr").evaluate_all(
        "(rows) => rows.map((r) => r.dataset.runId)")


def test_id_prefixes_open_pages_and_ambiguous_ones_name_the_candidates(
        page: Any, server: Server, db: dict[str, Any], shots: Path) -> None:
    page.goto(f"{server.url}/runs/{db['tiny'][:8]}?step={STEPS[0]}")
    expect(page).to_have_url(f"{server.url}/runs/{db['tiny']}?step={STEPS[0]}")
    expect(page.locator("#predictions-title")).to_contain_text(f"at step {STEPS[0]}")
    for suffix in ("1", "2"):
        created = httpx.post(server.url + "/api/runs", json={"id": f"twin-prefix-{suffix}"},
                             timeout=10)
        assert created.status_code == 201, created.text
    response = page.goto(f"{server.url}/runs/twin-prefix")
    assert response is not None and response.status == 409
    expect(page.locator(".error-message")).to_contain_text("twin-prefix-1")
    expect(page.locator(".error-message")).to_contain_text("twin-prefix-2")
    snap(page, shots / "ambiguous-prefix.png")


def test_checkpoint_jobs_show_on_the_run_page_and_update_live(browser: Any, server: Server,
                                                              db: dict[str, Any],
                                                              shots: Path) -> None:
    job_id, token = _new_run(server.url, "watched-checkpoints")
    _post_point(server.url, token, job_id, step=10, passing=2)
    store = open_store(db["url"])
    try:
        for step in (20, 30, 40):
            store.enqueue_job(job_id, step, f"/ckpt/checkpoint-{step}", max_attempts=1)
        failed = store.claim_job("gpu-worker-1", run_id=job_id)
        store.finish_job(failed.id, "gpu-worker-1", retry=False,
                         error="OSError: checkpoint-20 has no model.safetensors")
        running = store.claim_job("gpu-worker-2", run_id=job_id)
        for name, options in (("light", {}), ("dark", {"color_scheme": "dark"}),
                              ("phone", {"viewport": {"width": 390, "height": 844}})):
            with guarded_page(browser, **options) as page:
                page.goto(f"{server.url}/runs/{job_id}")
                counts = page.locator(".job-counts")
                expect(counts.locator('[data-job-count="failed"] b')).to_have_text("1")
                expect(counts.locator('[data-job-count="running"] b')).to_have_text("1")
                expect(counts.locator('[data-job-count="pending"] b')).to_have_text("1")
                expect(page.locator("table.failed-jobs-table")).to_contain_text(
                    "has no model.safetensors")
                if name == "phone":
                    assert page.evaluate("document.documentElement.scrollWidth") <= 390
                snap(page, shots / f"run-jobs-{name}.png")
        with guarded_page(browser) as page:
            page.goto(f"{server.url}/runs/{job_id}")
            page.evaluate("window.__sameDocument = true")
            store.finish_job(running.id, "gpu-worker-2", retry=False,
                             error="CUDA error: out of memory")  # no answers arrive: polled
            failed_count = page.locator('.job-counts [data-job-count="failed"] b')
            expect(failed_count).to_have_text("2", timeout=20_000)
            expect(page.locator("table.failed-jobs-table")).to_contain_text("out of memory")
            assert page.evaluate("window.__sameDocument") is True
            page.goto(server.url + "/")
            badge = page.locator(f'tr[data-run-id="{job_id}"] [data-jobs-badge]')
            expect(badge).to_have_text("jobs 0/3 · 2 failed")
    finally:
        store.close()
