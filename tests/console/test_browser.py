"""The console in a real browser: Debian's Chromium driven by Playwright, against the real
``fraud-console`` process on a real PostgreSQL filled by a real case-store sink process from a
real scorer process's decisions, publishing labels to librdkafka's mock cluster. An analyst
logs in, filters the queue, opens a case and labels it with the keyboard; the case leaves the
queue, the label is in the audit trail with her name and on the labels topic, and the sink
reading it back records nothing twice; a viewer is refused. No console errors, and every form
control has a label."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from confluent_kafka import KafkaException
from fraud_devtools.local import free_port, wait_until
from fraud_devtools.mock_cluster import MockCluster
from fraud_devtools.postgres import logins
from fraud_sinks.case_store import migrate
from fraud_training.synth import SynthConfig, generate

from tests.console.conftest import _HASHES, PASSWORDS, ROLES
from tests.integration.harness import (
    TOPICS,
    ScorerProcess,
    SinkProcess,
    produce,
    read_topic,
    stream,
)
from tests.integration.test_sinks import count, fresh_database

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium")
LABELS = "labels"


RULES = [
    {"name": "big", "expression": "tx.amount > 400.0", "action": "review"},
    {"name": "burst", "expression": "features.tx_count_1h >= 3", "action": "block"},
]


@pytest.fixture(scope="module")
def pipeline(
    postgres_url: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The case store as deployed fills it: transactions on the mock cluster, decided by a
    real scorer process and written by a real case-store sink process (its own login), with
    half the alerts labelled through the labels topic by the ground truth. The sink keeps
    running: it reads back the labels the console publishes."""
    work = tmp_path_factory.mktemp("pipeline")
    with MockCluster() as kafka:
        bootstrap = kafka.bootstrap_servers
        kafka.create_topic(LABELS, 2)
        owner = fresh_database(postgres_url, "console_browser")
        with psycopg.connect(owner, autocommit=True) as conn:
            migrate(conn)
        dsn = logins(owner, {"sink": "fraud_case_writer", "console": "fraud_console"})
        frame = generate(SynthConfig(users=400, days=2.0, seed=17)).iloc[:2000]
        items = stream(frame)
        produce(bootstrap, TOPICS["input"], items)
        scorer = ScorerProcess(work, bootstrap, model_dir, rules=RULES,
                               decision={"review_at": 0.5, "block_at": 0.95}).start()  # fmt: skip
        sink = SinkProcess(work, bootstrap, "postgres", env={"FRAUD_POSTGRES__DSN": dsn["sink"]},
                           labels_topic=LABELS).start()  # fmt: skip
        try:
            cases = "SELECT count(*) FROM cases"
            wait_until(lambda: count(owner, cases) == len(items), 180, "every decision a case")
            scorer.stop()
            truth = dict(zip(frame["transaction_id"], frame["label"], strict=True))
            with psycopg.connect(owner) as conn:
                query = "SELECT transaction_id FROM cases WHERE action <> 'allow' ORDER BY 1"
                alerted = [r[0] for r in conn.execute(query)]
            picked = alerted[::2]
            now = datetime.now(UTC).isoformat()
            produce(bootstrap, LABELS, [
                (tx.encode(), json.dumps({"transaction_id": tx, "is_fraud": bool(truth[tx]),
                                          "by": "ground-truth", "at": now}).encode())
                for tx in picked
            ])  # fmt: skip
            labelled = "SELECT count(*) FROM cases WHERE label IS NOT NULL"
            wait_until(lambda: count(owner, labelled) == len(picked), 60, "the labels recorded")
            yield {"owner": owner, "console": dsn["console"], "kafka": bootstrap, "sink": sink}
        finally:
            for process in (scorer, sink):
                if process.proc is not None and process.proc.poll() is None:
                    process.stop()


@pytest.fixture(scope="module")
def console(pipeline: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``fraud-console`` as deployed (its own process, 127.0.0.1 only)."""
    work = tmp_path_factory.mktemp("console")
    port = free_port()
    config = work / "console.yaml"
    config.write_text(yaml.safe_dump({
        "dsn": pipeline["console"], "session_secret": "b" * 40, "secure_cookies": False,
        "host": "127.0.0.1", "port": port,
        "auth": {"mode": "builtin",
                 "users": {n: {"password": h, "role": ROLES[n]} for n, h in _HASHES.items()}},
        "kafka": {"bootstrap_servers": pipeline["kafka"]}, "labels_topic": LABELS,
    }))  # fmt: skip
    log = (work / "console.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fraud_console", "--config", str(config)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _up(url), 30, f"the console ({(work / 'console.log').read_text()})")
        yield {**pipeline, "url": url, "log": str(work / "console.log")}
    finally:
        proc.terminate()
        # uvicorn shuts down cleanly, then re-raises the signal it caught (exit -15).
        assert proc.wait(timeout=30) in (0, -15), (work / "console.log").read_text()[-3000:]
        assert "Application shutdown complete" in (work / "console.log").read_text()


def _up(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: apt-get install chromium (make test does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


# FRAUD_SCREENSHOTS=DIR: also save the pages docs/console.md shows.
SHOTS = os.environ.get("FRAUD_SCREENSHOTS")


def shot(page: Any, name: str) -> None:
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / f"console-{name}.png"), full_page=False)


UNLABELLED = """() => Array.from(document.querySelectorAll(
    'input:not([type=hidden]), select, textarea')).filter(
    el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')).map(el => el.name)"""


def log_in(page: Any, url: str, who: str) -> None:
    page.goto(url + "/")
    assert page.url.startswith(url + "/login")
    page.get_by_label("Name").fill(who)
    page.get_by_label("Password").fill(PASSWORDS[who])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(url + "/")


def test_an_analyst_labels_with_the_keyboard_and_a_viewer_is_refused(
    console: dict[str, Any], browser: Any
) -> None:
    url = console["url"]
    context = browser.new_context()
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    echoes = console["sink"].metric("fraud_sink_labels_total", result="applied")
    log_in(page, url, "alice")
    assert page.evaluate(UNLABELLED) == []
    page.get_by_label("Action").select_option("review")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/?action=review**")
    rows = page.locator("tr[data-case]")
    assert rows.count() > 0
    assert all(a == "review" for a in page.locator("td.action-review").all_inner_texts())
    first = rows.first.get_attribute("data-case")
    shot(page, "queue")

    page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/cases/{first}**")
    assert page.evaluate(UNLABELLED) == []
    shot(page, "case")
    page.keyboard.press("n")
    page.keyboard.type("stolen card, confirmed by phone")
    page.keyboard.press("Escape")
    page.keyboard.press("f")
    page.wait_for_url("**/?action=review**")
    assert first not in page.locator("tr[data-case]").evaluate_all(
        "rows => rows.map(r => r.dataset.case)"
    )

    with psycopg.connect(console["owner"]) as conn:
        row = conn.execute(
            "SELECT verdict, label_note, analyst FROM cases WHERE transaction_id = %s", (first,)
        ).fetchone()
        audit = conn.execute(
            "SELECT detail FROM audit WHERE kind = 'label' AND subject = %s", (first,)
        ).fetchall()
    assert row == ("fraud", "stolen card, confirmed by phone", "alice")
    assert [a[0]["analyst"] for a in audit] == ["alice"]

    def published() -> list[dict[str, Any]]:
        try:
            found = read_topic(console["kafka"], LABELS, 2)
        except KafkaException:  # the outbox has not created the topic yet
            return []
        msgs = [json.loads(m.value or b"{}") for m in found]
        return [m for m in msgs if m.get("transaction_id") == first]

    wait_until(lambda: bool(published()), 30, "the label on the labels topic")
    sent = published()
    assert sent[0]["by"] == "alice" and sent[0]["is_fraud"] is True
    # The case-store sink reads it back and recognises the console's own label: one audit row.
    wait_until(
        lambda: console["sink"].metric("fraud_sink_labels_total", result="applied") > echoes,
        30, "the sink reading the label back",
    )  # fmt: skip
    with psycopg.connect(console["owner"]) as conn:
        assert conn.execute(
            "SELECT count(*) FROM audit WHERE kind = 'label' AND subject = %s", (first,)
        ).fetchone() == (1,)

    page.get_by_role("button", name="Log out").click()
    log_in(page, url, "victor")
    page.goto(f"{url}/cases/{first}")
    assert page.get_by_role("group", name="Verdict").count() == 0  # no label form
    page.keyboard.press("l")  # and the shortcut does nothing
    assert problems == [], problems  # (the refusal below is logged as a failed load)
    # A hand-made form post is refused by the server (the page's CSP allows no fetch at all).
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    with page.expect_response(f"**/cases/{first}/label") as answer:
        page.evaluate(
            """(csrf) => { const f = document.createElement('form'); f.method = 'post';
            f.action = location.pathname + '/label';
            for (const [k, v] of [['verdict', 'legitimate'], ['csrf', csrf]]) {
              const i = document.createElement('input'); i.type = 'hidden'; i.name = k;
              i.value = v; f.appendChild(i); }
            document.body.appendChild(f); f.submit(); }""",
            csrf,
        )
    assert answer.value.status == 403
    assert "analyst role needed" in answer.value.text()
    with psycopg.connect(console["owner"]) as conn:
        assert conn.execute(
            "SELECT verdict FROM cases WHERE transaction_id = %s", (first,)
        ).fetchone() == ("fraud",)

    # The performance view draws its charts with the console's own Chart.js, inside the CSP.
    problems.clear()
    page.goto(f"{url}/")
    page.get_by_role("link", name="Performance").click()
    page.wait_for_selector("body[data-charts=drawn]", timeout=15_000)
    assert page.evaluate(UNLABELLED) == []
    assert page.locator("tr[data-reason]").count() > 0
    shot(page, "performance")
    assert problems == [], problems
    context.close()


def _raw(url: str, method: str, path: str, body: bytes = b"", **headers: str) -> tuple[int, str]:
    """One request as a hostile client writes it (no browser, no client-side checks)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            conn.putheader(name, value)
        conn.endheaders(body or None)
        answer = conn.getresponse()
        return answer.status, answer.read().decode(errors="replace")
    except (ConnectionError, http.client.HTTPException):
        return 0, ""  # the server closed the connection on us
    finally:
        conn.close()


def test_hostile_requests_are_refused_and_the_console_keeps_serving(
    console: dict[str, Any],
) -> None:
    """Against the real process: forged identities, forged and missing CSRF tokens, NUL
    bytes, non-finite numbers, traversal, markup in ids, an oversized body and a password
    flood each get a clear 4xx (never a 500), nothing is written, and the console answers
    normally afterwards with no traceback in its log."""
    import re
    import urllib.parse

    url = console["url"]
    form = "application/x-www-form-urlencoded"
    with psycopg.connect(console["owner"]) as conn:
        (victim,) = conn.execute(
            "SELECT transaction_id FROM cases WHERE action <> 'allow' AND label IS NULL LIMIT 1"
        ).fetchone()  # type: ignore[misc]
        before = conn.execute("SELECT count(*) FROM audit").fetchone()

    # An OIDC proxy's headers mean nothing to a console with its own login.
    forged = {"X-Forwarded-Email": "root@example.com", "X-Forwarded-Groups": "admins"}
    status, _ = _raw(url, "GET", "/", **forged)
    assert status == 303  # to the login page
    # A label without a session, and one with a token from another session.
    status, _ = _raw(url, "POST", f"/cases/{victim}/label", b"verdict=fraud&csrf=x",
                     **{"Content-Type": form})  # fmt: skip
    assert status == 303  # not logged in: to the login page, nothing written
    session = _login(url, "alice")
    status, _ = _raw(url, "POST", f"/cases/{victim}/label", b"verdict=fraud&csrf=forged",
                     **{"Content-Type": form, "Cookie": session["cookie"]})  # fmt: skip
    assert status == 403
    authed = {"Cookie": session["cookie"]}
    hostile = {
        "/?user=%00": 400,
        "/cases/a%00b": 400,
        "/?min_amount=nan": 400,
        "/?max_amount=1e999": 400,
        "/?since=yesterday": 400,
        "/?user=%27%20OR%201%3D1%20--": 200,  # a parameter, not SQL: no rows
        "/static/..%2f..%2fsettings.py": 404,
        "/static/../app.py": 404,
        "/cases/%3Cscript%3Ealert(1)%3C%2Fscript%3E": 404,
    }
    for path, wanted in hostile.items():
        status, text = _raw(url, "GET", path, **authed)
        assert status == wanted, (path, status, text[:300])
        assert "<script>alert" not in text
    status, text = _raw(url, "GET", "/?user=%27%20OR%201%3D1%20--", **authed)
    assert "<tr data-case=" not in text
    note = urllib.parse.urlencode({"verdict": "fraud", "note": "a\x00b", "csrf": session["csrf"]})
    status, _ = _raw(url, "POST", f"/cases/{victim}/label", note.encode(),
                     **{"Content-Type": form, **authed})  # fmt: skip
    assert status == 400
    huge = b"verdict=fraud&note=" + b"x" * (1 << 20)
    status, _ = _raw(url, "POST", f"/cases/{victim}/label", huge,
                     **{"Content-Type": form, **authed})  # fmt: skip
    assert status in (413, 0)  # refused before the body is read
    # Guessing a password: five tries, then 429 without a password check, even the right one.
    statuses = [_login_attempt(url, "victor", f"guess-{i}") for i in range(6)] + [
        _login_attempt(url, "victor", PASSWORDS["victor"])
    ]
    assert statuses == [200] * 5 + [429, 429]

    with psycopg.connect(console["owner"]) as conn:
        assert conn.execute("SELECT count(*) FROM audit").fetchone() == before
        assert conn.execute(
            "SELECT label FROM cases WHERE transaction_id = %s", (victim,)
        ).fetchone() == (None,)
    status, text = _raw(url, "GET", "/?action=review", **authed)
    assert status == 200 and re.search(r"<tr data-case=", text)
    assert "Traceback" not in (Path(console["log"]).read_text())


def _login_attempt(url: str, name: str, password: str) -> int:
    import urllib.parse

    jar = _new_session(url)
    body = urllib.parse.urlencode({"username": name, "password": password, "csrf": jar["csrf"]})
    status, _ = _raw(url, "POST", "/login", body.encode(), Cookie=jar["cookie"],
                     **{"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    return status


def _new_session(url: str) -> dict[str, str]:
    """A fresh session's cookie and CSRF token, from the login page."""
    import re
    import urllib.request

    with urllib.request.urlopen(url + "/login", timeout=10) as r:
        cookie = r.headers["Set-Cookie"].split(";", 1)[0]
        html = r.read().decode()
    token = re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    return {"cookie": cookie, "csrf": token}


def _login(url: str, name: str) -> dict[str, str]:
    """A logged-in session: its cookie and its CSRF token."""
    import http.client
    import re
    import urllib.parse
    from urllib.parse import urlsplit

    jar = _new_session(url)
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    body = urllib.parse.urlencode({"username": name, "password": PASSWORDS[name],
                                   "csrf": jar["csrf"]})  # fmt: skip
    conn.request("POST", "/login", body, {"Cookie": jar["cookie"],
                 "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    answer = conn.getresponse()
    assert answer.status == 303, answer.read()[:300]
    answer.read()
    cookie = (answer.getheader("Set-Cookie") or jar["cookie"]).split(";", 1)[0]
    # A login starts a new session (no fixation): its token comes with the first page.
    conn.request("GET", "/", headers={"Cookie": cookie})
    page = conn.getresponse()
    html = page.read().decode()
    cookie = (page.getheader("Set-Cookie") or cookie).split(";", 1)[0]
    conn.close()
    token = re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    return {"cookie": cookie, "csrf": token}
