"""``make bench``, console side: server time of the queue and case pages over a case store of
1,000,000 cases, against the same pages over 10,000 cases in the same run.

The cases are COPYed straight into a throw-away PostgreSQL on 127.0.0.1 (10% of them alerts,
reasons and merchants spread as in production; the rollup trigger counts them as the sink's
writes would be), migrated and vacuumed, then each page is asked
for through the console's own app in this process (FastAPI's test client: routing, the SQL, the
template, no network), as a logged-in viewer:

- ``queue``: the first page, unfiltered;
- ``queue_filtered``: by action, by reason, by merchant, by amount range, by score order;
- ``queue_deep``: the 50th page, reached by following the keyset cursors;
- ``case``: a random alert's page (transaction, reason codes, the user's recent cases, alerts
  sharing the device and the merchant, the audit trail);
- ``performance``: the last 30 days' precision by reason and by day, alerts by day, score
  distributions by track and model, and the precision-recall curve (a third of the alerts
  are labelled).

Reports p50/p95 per page and size, and the ratio of p95 at 1M to p95 at 10k (a page should not
get slower as the store grows). Goal (issue 17): p95 <= 200 ms at 1M. Writes
build/bench-console.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from fastapi.testclient import TestClient
from fraud_console.app import create_app
from fraud_console.auth import hash_password
from fraud_console.settings import ConsoleSettings
from fraud_console.store import Store, configure
from fraud_sinks.case_store import migrate
from psycopg_pool import ConnectionPool

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.servers import postgres_server

RULES = ["high-amount", "card-testing", "impossible-travel", "new-device-night", "velocity"]
MERCHANTS = 5_000
USERS = 200_000
NOW = time.time()
PAGES = ("queue", "queue_filtered", "queue_deep", "case", "performance")


def _ts(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(at))


def fill(conn: psycopg.Connection[Any], n: int, seed: int = 7) -> None:
    """``n`` cases: one in ten an alert (a review or block, by rules and/or the model)."""
    rng = random.Random(seed)
    columns = (
        "transaction_id, user_id, detector, track, action, score, reasons, model_version, "
        "rules_version, event_time, scored_at, transaction, why, label"
    )
    with conn.cursor().copy(f"COPY cases ({columns}) FROM STDIN") as copy:
        for i in range(n):
            alert = rng.random() < 0.1
            score = rng.betavariate(5, 2) if alert else rng.betavariate(1, 30)
            reasons = rng.sample(RULES, rng.randint(0, 2)) if alert else []
            if alert and (score > 0.8 or not reasons):
                reasons.append("model")
            action = ("block" if score > 0.97 else "review") if alert else "allow"
            at = NOW - (n - i) * 0.5  # the most recent case now
            user, merchant = f"u-{rng.randrange(USERS):07d}", f"m-{rng.randrange(MERCHANTS):05d}"
            tx = {
                "transaction_id": f"tx-{i:09d}",
                "user_id": user,
                "merchant": merchant,
                "amount": round(rng.lognormvariate(3.5, 1.2), 2),
                "currency": "EUR",
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
                "merchant_category": "retail",
                "channel": "online",
                "location": "DE",
                "device_id": f"d-{rng.randrange(USERS * 2):08d}",
            }
            rules = [{"rule": r, "values": {"tx.amount": tx["amount"]}} for r in reasons]
            why = {"rules": [r for r in rules if r["rule"] != "model"]} if alert else None
            # A third of the alerts labelled, fraud more often the higher the score.
            label = int(rng.random() < score) if alert and rng.random() < 1 / 3 else None
            copy.write_row((
                tx["transaction_id"], user, "bench", "stable", action, score, reasons, "m1",
                "r1", _ts(at), _ts(at + 0.05), json.dumps(tx), json.dumps(why) if why else None,
                label,
            ))  # fmt: skip
    # What autovacuum does after a bulk load: statistics, and the visibility map that lets
    # the labelled cases' covering index answer without reading the table.
    conn.execute("VACUUM ANALYZE cases")


def timed(c: TestClient, path: str) -> tuple[float, str]:
    started = time.perf_counter()
    r = c.get(path)
    elapsed = time.perf_counter() - started
    assert r.status_code == 200, (path, r.status_code, r.text[:300])
    return elapsed, r.text


def measure(dsn: str, rounds: int, seed: int = 3) -> dict[str, dict[str, float]]:
    settings = ConsoleSettings.model_validate(
        {
            "dsn": dsn,
            "session_secret": "b" * 40,
            "secure_cookies": False,
            "auth": {
                "mode": "builtin",
                "users": {"bench": {"password": hash_password("b"), "role": "viewer"}},
            },
        }
    )
    rng = random.Random(seed)
    with ConnectionPool(
        dsn, min_size=2, max_size=4, kwargs={"autocommit": True}, configure=configure
    ) as pool:
        c = TestClient(create_app(settings, Store(pool)), follow_redirects=False)
        found = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)
        assert found is not None
        c.post("/login", data={"username": "bench", "password": "b", "csrf": found.group(1)})
        with pool.connection() as conn:
            alerts = [
                r[0]
                for r in conn.execute(
                    "SELECT transaction_id FROM cases WHERE action <> 'allow' "
                    "ORDER BY random() LIMIT %s",
                    (rounds,),
                ).fetchall()
            ]
        pages: dict[str, list[float]] = {name: [] for name in PAGES}
        filters = [
            "action=block",
            "reason=card-testing",
            "min_amount=200&max_amount=900",
            "sort=score",
            "reason=model&action=review",
        ]
        timed(c, "/")  # warm: the pool's connections, the templates
        for i in range(rounds):
            pages["queue"].append(timed(c, "/")[0])
            merchant = f"m-{rng.randrange(MERCHANTS):05d}"
            query = filters[i % len(filters)] if i % 6 else f"merchant={merchant}"
            pages["queue_filtered"].append(timed(c, "/?" + query)[0])
            pages["case"].append(timed(c, f"/cases/{alerts[i % len(alerts)]}")[0])
            if i % 3 == 0:  # the heaviest page; analysts open it far less often
                pages["performance"].append(timed(c, "/performance?days=30")[0])
        for _ in range(max(rounds // 10, 3)):  # deep pages: 50 cursor hops each
            url, elapsed = "/", 0.0
            for _ in range(50):
                elapsed, html = timed(c, url)
                more = re.search(r'<a href="([^"]+)" rel="next">', html)
                url = more.group(1).replace("&amp;", "&") if more else "/"
            pages["queue_deep"].append(elapsed)
    return {
        name: {
            "p50_ms": round(statistics.median(v) * 1000, 1),
            "p95_ms": round(statistics.quantiles(v, n=20)[18] * 1000, 1),
            "n": len(v),
        }
        for name, v in pages.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("build/bench-console.json"))
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"machine": platform.machine(), "python": platform.python_version()}
    with postgres_server() as url:
        base = url.rsplit("/", 1)[0]
        for label, n in (("small", args.small), ("large", args.cases)):
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(f"CREATE DATABASE cases_{label}")
            dsn = f"{base}/cases_{label}"
            started = time.perf_counter()
            with psycopg.connect(dsn, autocommit=True) as conn:
                migrate(conn)
                fill(conn, n)
            loaded = time.perf_counter() - started
            results[label] = {"cases": n, "load_s": round(loaded, 1), **measure(dsn, args.rounds)}
            print(f"{n:,} cases (loaded in {loaded:.0f} s): {results[label]}", flush=True)
    small, large = results["small"], results["large"]
    results["p95_ratio_large_to_small"] = {
        k: round(large[k]["p95_ms"] / small[k]["p95_ms"], 2) for k in PAGES
    }
    results["goal_p95_ms"] = 200
    results["met"] = all(large[k]["p95_ms"] <= 200 for k in PAGES)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps({k: results[k] for k in ("p95_ratio_large_to_small", "met")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
