"""The console in a real browser: Debian's Chromium driven by Playwright, against the real
``fraud-console`` process on a real PostgreSQL filled by the case store from a real scorer's
decisions, publishing labels to librdkafka's mock cluster. An analyst logs in, filters the
queue, opens a case and labels it with the keyboard; the case leaves the queue, the label is
in the audit trail with her name and on the labels topic; a viewer is refused. No console
errors, and every form control has a label."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from confluent_kafka import KafkaException
from fraud_devtools.local import free_port, wait_until
from fraud_devtools.mock_cluster import MockCluster

from tests.console.conftest import _HASHES, PASSWORDS, ROLES
from tests.integration.harness import read_topic

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def console(database: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``fraud-console`` as deployed (its own process, 127.0.0.1 only)."""
    work = tmp_path_factory.mktemp("console")
    port = free_port()
    with MockCluster() as kafka:
        config = work / "console.yaml"
        config.write_text(yaml.safe_dump({
            "dsn": database["console"], "session_secret": "b" * 40, "secure_cookies": False,
            "host": "127.0.0.1", "port": port,
            "auth": {"mode": "builtin",
                     "users": {n: {"password": h, "role": ROLES[n]} for n, h in _HASHES.items()}},
            "kafka": {"bootstrap_servers": kafka.bootstrap_servers}, "labels_topic": "labels",
        }))  # fmt: skip
        log = (work / "console.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "fraud_console", "--config", str(config)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: _up(url), 30, f"the console ({(work / 'console.log').read_text()})")
            yield {"url": url, "kafka": kafka.bootstrap_servers}
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
    console: dict[str, str], browser: Any, database: dict[str, str]
) -> None:
    url = console["url"]
    context = browser.new_context()
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

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

    with psycopg.connect(database["owner"]) as conn:
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
            found = read_topic(console["kafka"], "labels")
        except KafkaException:  # the outbox has not created the topic yet
            return []
        msgs = [json.loads(m.value or b"{}") for m in found]
        return [m for m in msgs if m.get("transaction_id") == first]

    wait_until(lambda: bool(published()), 30, "the label on the labels topic")
    sent = published()
    assert sent[0]["by"] == "alice" and sent[0]["is_fraud"] is True

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
    with psycopg.connect(database["owner"]) as conn:
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
