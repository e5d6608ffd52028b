"""The console's server side against the real case store: logins and roles, the queue's
filters and keyset pages, a case page with card numbers masked, labels audited with the
analyst's name and published through the outbox, CSRF and security headers."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from fraud_console.app import create_app
from fraud_console.outbox import Outbox
from fraud_console.settings import ConsoleSettings
from fraud_console.store import QueueFilter, Store, queue_query
from fraud_devtools.mock_cluster import MockCluster
from fraud_runtime.settings import KafkaSettings
from fraud_sinks.case_store import CaseStore
from fraud_sinks.messages import Label
from psycopg_pool import ConnectionPool

from tests.console.conftest import PASSWORDS, settings
from tests.integration.harness import read_topic

pytestmark = pytest.mark.integration
PAN = "4111 1111 1111 1111"


@pytest.fixture(scope="module")
def app(database: dict[str, str], pool: ConnectionPool[Any]) -> Any:
    # One case whose transaction carries a card number where no field should.
    with psycopg.connect(database["sink"], autocommit=True) as sink:
        CaseStore(sink).write([{
            "transaction_id": "tx-pan", "user_id": "u-pan", "detector": "retail",
            "track": "stable", "action": "review", "score": 0.91, "reasons": ["model"],
            "model_version": "m1", "rules_version": "r1", "event_time": 1_800_000_000.0,
            "scored_at": 1_800_000_001.0,
            "transaction": {"transaction_id": "tx-pan", "merchant": "m-pan", "amount": 12.5,
                            "device_id": "d-pan", "note": f"card {PAN}"},
        }])  # fmt: skip
    return create_app(settings(database, page_size=20), Store(pool))


def client(app: Any, who: str | None = None) -> TestClient:
    c = TestClient(app, follow_redirects=False)
    if who is not None:
        token = _token(c.get("/login").text)
        r = c.post("/login", data={"username": who, "password": PASSWORDS[who], "csrf": token})
        assert r.status_code == 303, r.text
    return c


def _token(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def _ids(html: str) -> list[str]:
    return re.findall(r'<tr data-case="([^"]+)"', html)


def test_every_page_needs_a_login_and_a_wrong_password_gets_nowhere(app: Any) -> None:
    c = client(app)
    r = c.get("/")
    assert (r.status_code, r.headers["location"]) == (303, "/login?next=%2F")
    token = _token(c.get("/login").text)
    wrong = c.post("/login", data={"username": "alice", "password": "nope", "csrf": token})
    assert wrong.status_code == 200 and "Wrong name or password" in wrong.text
    nobody = c.post("/login", data={"username": "mallory", "password": "x", "csrf": token})
    assert "Wrong name or password" in nobody.text
    assert (
        c.post("/login", data={"username": "alice", "password": PASSWORDS["alice"]}).status_code
        == 403
    )  # no CSRF token
    # Only paths on this site after a login: no open redirect.
    r = c.post("/login", data={"username": "alice", "password": PASSWORDS["alice"],
                               "csrf": token, "next": "//evil.example/"})  # fmt: skip
    assert r.headers["location"] == "/"
    from fraud_console.app import _local

    assert [
        _local(p) for p in ("/\\evil.example", "/x\r\nSet-Cookie: a=b", "https://e.x", "/ok")
    ] == ["/", "/", "/", "/ok"]


def test_security_headers_on_every_answer(app: Any) -> None:
    for path in ("/login", "/", "/static/console.js", "/cases/nope"):
        r = client(app, "victor").get(path)
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp, path
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
    cookie = client(app).get("/login").headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()


def test_the_queue_filters_sorts_and_pages_through_keyset_cursors(
    app: Any, database: dict[str, str]
) -> None:
    c = client(app, "victor")
    with psycopg.connect(database["owner"]) as conn:
        open_alerts = conn.execute(
            "SELECT count(*) FROM cases WHERE action <> 'allow' AND label IS NULL"
        ).fetchone()[0]  # type: ignore[index]
        blocks = conn.execute(
            "SELECT transaction_id FROM cases WHERE action = 'block' AND label IS NULL "
            "ORDER BY scored_at DESC, transaction_id DESC LIMIT 20"
        ).fetchall()
    assert open_alerts > 40 and blocks
    seen, url = [], "/"
    while url:
        page = c.get(url).text
        seen += _ids(page)
        more = re.search(r'<a href="([^"]+)" rel="next">', page)
        url = more.group(1).replace("&amp;", "&") if more else ""
    assert len(seen) == len(set(seen)) == open_alerts  # every open alert once, no page twice
    assert _ids(c.get("/?action=block").text) == [r[0] for r in blocks]
    big = _ids(c.get("/?reason=big&min_amount=400").text)
    assert big and all(b in seen for b in big)
    scores = [float(s) for s in re.findall(r"<td>(\d\.\d{3})</td>", c.get("/?sort=score").text)]
    assert scores == sorted(scores, reverse=True)
    assert c.get("/?min_amount=lots").status_code == 400
    assert c.get("/?sort=score&ak=x&at=y").status_code == 400


def test_the_queue_reads_through_its_index(database: dict[str, str]) -> None:
    sql, args = queue_query(QueueFilter(action="review"), 50)
    with psycopg.connect(database["owner"]) as conn:
        conn.execute("SET enable_seqscan = off")  # a small table: ask whether it could
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, args).fetchall())  # type: ignore[arg-type]
    assert "Index Scan" in plan and "Seq Scan" not in plan, plan


def test_a_case_page_masks_card_numbers_and_shows_why(app: Any) -> None:
    c = client(app, "victor")
    page = c.get("/cases/tx-pan").text
    assert "4111 1111 1111 1111" not in page and "1111" in page  # masked, last four kept
    alert = next(i for i in _ids(c.get("/?reason=big").text) if i != "tx-pan")
    page = c.get(f"/cases/{alert}").text
    assert "<b>big</b>" in page and "Alerts with the same merchant" in page
    assert c.get("/cases/nope").status_code == 404


def test_an_analyst_labels_a_case_once_audited_and_published(
    app: Any, database: dict[str, str], pool: ConnectionPool[Any]
) -> None:
    c = client(app, "alice")
    victim = _ids(c.get("/?action=review").text)[0]
    page = c.get(f"/cases/{victim}").text
    r = c.post(f"/cases/{victim}/label",
               data={"verdict": "friendly_fraud", "note": "cardholder's son", "csrf": _token(page),
                     "back": "action=review"})  # fmt: skip
    assert (r.status_code, r.headers["location"]) == (303, "/?action=review")
    assert victim not in _ids(c.get("/?action=review").text)  # it left the queue
    with psycopg.connect(database["owner"]) as conn:
        row = conn.execute(
            "SELECT label, verdict, label_note, analyst, labelled_by, status FROM cases "
            "WHERE transaction_id = %s",
            (victim,),
        ).fetchone()
        audit = conn.execute(
            "SELECT detail FROM audit WHERE kind = 'label' AND subject = %s", (victim,)
        ).fetchall()
    assert row == (1, "friendly_fraud", "cardholder's son", "alice", "console", "closed")
    assert [a[0]["analyst"] for a in audit] == ["alice"] and audit[0][0]["by"] == "console"

    # The outbox publishes it; the case-store sink that reads it back records nothing new.
    with MockCluster() as kafka:
        outbox = Outbox(pool, KafkaSettings(bootstrap_servers=kafka.bootstrap_servers), "labels")
        assert outbox.publish() >= 1
        sent = [json.loads(m.value or b"") for m in read_topic(kafka.bootstrap_servers, "labels")]
    mine = [m for m in sent if m["transaction_id"] == victim]
    assert len(mine) == 1 and mine[0]["by"] == "alice" and mine[0]["transaction"]
    assert mine[0]["is_fraud"] is True and mine[0]["verdict"] == "friendly_fraud"
    at = datetime.fromisoformat(mine[0]["at"])
    with psycopg.connect(database["sink"], autocommit=True) as sink:
        CaseStore(sink).label([Label(victim, True, "alice", at)])
    with psycopg.connect(database["owner"]) as conn:
        n = conn.execute(
            "SELECT count(*) FROM audit WHERE kind = 'label' AND subject = %s", (victim,)
        ).fetchone()
        left = conn.execute("SELECT count(*) FROM label_outbox").fetchone()
        kept = conn.execute(
            "SELECT verdict, labelled_by FROM cases WHERE transaction_id = %s", (victim,)
        ).fetchone()
    assert (n, left, kept) == ((1,), (0,), ("friendly_fraud", "console"))


def test_viewers_read_and_only_analysts_write(app: Any) -> None:
    viewer = client(app, "victor")
    victim = _ids(viewer.get("/").text)[0]
    page = viewer.get(f"/cases/{victim}").text
    assert "Verdict</legend>" not in page  # no label form for a viewer
    r = viewer.post(f"/cases/{victim}/label", data={"verdict": "fraud", "csrf": _token(page)})
    assert r.status_code == 403
    analyst = client(app, "alice")
    r = analyst.post(f"/cases/{victim}/label", data={"verdict": "fraud", "csrf": "forged"})
    assert r.status_code == 403  # a forged form token
    r = analyst.post(f"/cases/{victim}/label", data={"verdict": "maybe",
                     "csrf": _token(analyst.get("/").text)})  # fmt: skip
    assert r.status_code == 400


def test_bulk_labels_and_assignment(app: Any, database: dict[str, str]) -> None:
    c = client(app, "alice")
    page = c.get("/?action=block").text
    picked = _ids(page)[:3]
    token = _token(page)
    r = c.post("/label", data={"tx": picked, "verdict": "fraud", "csrf": token})
    assert r.status_code == 303
    assert not set(picked) & set(_ids(c.get("/?action=block").text))
    mine = _ids(c.get("/").text)[0]
    c.post(f"/cases/{mine}/assign", data={"to": "me", "csrf": token})
    assert "alice" in c.get(f"/cases/{mine}").text
    with psycopg.connect(database["owner"]) as conn:
        assert conn.execute(
            "SELECT status, assignee FROM cases WHERE transaction_id = %s", (mine,)
        ).fetchone() == ("in_review", "alice")
        kinds = {
            r[0]
            for r in conn.execute(
                "SELECT kind FROM audit WHERE subject = ANY(%s)", ([*picked, mine],)
            ).fetchall()
        }
    assert {"label", "assign"} <= kinds
    c.post(f"/cases/{mine}/status", data={"status": "closed", "csrf": token})
    wrong = c.post(f"/cases/{mine}/status", data={"status": "gone", "csrf": token})
    assert wrong.status_code == 400
    with psycopg.connect(database["owner"]) as conn:
        assert conn.execute(
            "SELECT status FROM cases WHERE transaction_id = %s", (mine,)
        ).fetchone() == ("closed",)
        detail = conn.execute(
            "SELECT detail FROM audit WHERE kind = 'status' AND subject = %s", (mine,)
        ).fetchone()
    assert detail is not None and detail[0]["analyst"] == "alice"


def test_proxy_identities_are_trusted_only_from_the_proxy(
    database: dict[str, str], pool: ConnectionPool[Any]
) -> None:
    proxied = ConsoleSettings(
        dsn=database["console"], session_secret="s" * 40, secure_cookies=False,
        auth={"mode": "proxy", "proxy": {
            "trusted_proxies": ["10.0.0.0/24"],
            "groups": {"fraud-team": "analyst", "auditors": "viewer"}}},
    )  # fmt: skip
    app = create_app(proxied, Store(pool))
    headers = {"X-Forwarded-Email": "dana@example.com", "X-Forwarded-Groups": "auditors,x"}
    inside = TestClient(app, client=("10.0.0.7", 4000), follow_redirects=False)
    r = inside.get("/", headers=headers)
    assert r.status_code == 200 and "dana@example.com (viewer)" in r.text
    outside = TestClient(app, client=("192.0.2.9", 4000), follow_redirects=False)
    assert outside.get("/", headers=headers).status_code == 403
    stranger = {"X-Forwarded-Email": "eve@example.com", "X-Forwarded-Groups": "other"}
    assert inside.get("/", headers=stranger).status_code == 403


def test_the_performance_view_reads_precision_from_labels(app: Any) -> None:
    """After the labels above: each labelled reason's precision, and a curve that starts at
    the highest scores and ends at recall 1."""
    c = client(app, "victor")
    page = c.get("/performance?days=30").text
    data = json.loads(re.search(r'id="perf-data">(.*?)</script>', page, re.S).group(1))  # type: ignore[union-attr]
    assert data["precision"] and data["alerts"] and data["scores"]
    assert data["pr"][-1][2] == pytest.approx(1.0)
    assert "labelled cases since" in page and '<tr data-reason="' in page
    assert '<script src="/static/vendor/chart.umd.min.js"' in page


def test_pr_curve_by_hand() -> None:
    from fraud_console.store import pr_curve

    # (bin lower bound, labelled cases, frauds): 3 frauds in all.
    curve = pr_curve([(0.1, 4, 0), (0.9, 2, 2), (0.5, 2, 1)])
    assert curve == [(0.9, 1.0, 2 / 3), (0.5, 0.75, 1.0), (0.1, 3 / 8, 1.0)]
    assert pr_curve([]) == []


def test_vendored_assets_are_pinned_by_digest() -> None:
    import hashlib
    from pathlib import Path

    import fraud_console

    vendor = Path(fraud_console.__file__).with_name("static") / "vendor"
    digest = hashlib.sha256((vendor / "chart.umd.min.js").read_bytes()).hexdigest()
    assert digest == "87364cc2b2a76a6684929e7d6b80b18a897794db38400caff1fcf1791c6925d2"
    assert digest in (vendor / "README.md").read_text()


def test_failed_logins_are_throttled_per_key_over_a_sliding_window() -> None:
    from fraud_console.auth import LoginThrottle

    now = [0.0]
    t = LoginThrottle(limit=3, window_s=60.0, max_keys=2, clock=lambda: now[0])
    for _ in range(3):
        assert not t.blocked("alice")
        t.failed("alice")
        now[0] += 1
    assert t.blocked("alice") and not t.blocked("bob")
    now[0] += 57.5  # t=60.5: the first failure (t=0) leaves the window
    assert not t.blocked("alice")
    t.failed("alice")
    assert t.blocked("alice")
    t.succeeded("alice")
    assert not t.blocked("alice")
    for key in ("a", "b", "c"):  # bounded: the oldest key goes
        t.failed(key)
    assert set(t._failures) == {"b", "c"}
