"""When a pass may read its FraudDetector from the watch instead of GETting it: only while no
write of the operator's own is on its way (a body that predates the status it wrote would send
a rollout back)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fraud_operator.detector_cache import DetectorCache

KEY = ("ns", "fd")


def body(version: str, phase: str = "Stable") -> dict[str, Any]:
    return {
        "metadata": {"name": "fd", "namespace": "ns", "resourceVersion": version},
        "status": {"phase": phase},
    }


def test_the_watch_body_serves_until_a_write_of_ours_then_again_once_delivered() -> None:
    cache = DetectorCache()
    assert cache.current(KEY) is None  # never seen: the pass GETs
    cache.seen(KEY, body("10"))
    assert cache.current(KEY) == body("10")
    cache.awaiting(KEY, None)  # a status write under way
    assert cache.current(KEY) is None
    cache.awaiting(KEY, "12")  # it answered: the detector is at 12
    cache.seen(KEY, body("11", "Preflight"))  # an older event, delivered late
    assert cache.current(KEY) is None, "a body older than our own write was trusted"
    cache.seen(KEY, body("12", "Canary"))
    assert cache.current(KEY) == body("12", "Canary")


def test_a_write_the_watch_delivered_before_it_answered_is_not_awaited_forever() -> None:
    cache = DetectorCache()
    cache.seen(KEY, body("10"))
    cache.awaiting(KEY, None)
    cache.seen(KEY, body("12", "Canary"))  # the watch was faster than the answer
    cache.awaiting(KEY, "12")
    assert cache.current(KEY) == body("12", "Canary")


def test_a_failed_write_trusts_nothing_until_a_get_is_delivered() -> None:
    cache = DetectorCache()
    cache.seen(KEY, body("10"))
    cache.awaiting(KEY, None)  # the write failed: its outcome unknown
    cache.seen(KEY, body("11"))
    assert cache.current(KEY) is None
    cache.awaiting(KEY, "13")  # the pass GETs: the detector is at 13
    cache.seen(KEY, body("12"))
    assert cache.current(KEY) is None
    cache.seen(KEY, body("13"))
    assert cache.current(KEY) == body("13")


def test_a_deleted_detector_is_forgotten() -> None:
    cache = DetectorCache()
    cache.seen(KEY, body("10"))
    cache.awaiting(KEY, "11")
    cache.gone(KEY)
    assert cache.current(KEY) is None
    cache.seen(KEY, body("20"))  # created again under the same name
    assert cache.current(KEY) == body("20")


def test_events_racing_writes_never_leave_an_older_body_trusted() -> None:
    """The watch's thread delivers versions in order while a pass's thread writes; whenever
    the cache answers, its body is at least the newest version the writer has had answered."""
    for _ in range(200):
        cache = DetectorCache()
        cache.seen(KEY, body("0"))
        answered: list[int] = [0]
        bad: list[str] = []

        def watch(cache: DetectorCache = cache) -> None:
            for v in range(1, 60):
                cache.seen(KEY, body(str(v)))

        def writer(cache: DetectorCache = cache, answered: list[int] = answered) -> None:
            for v in range(5, 60, 5):  # our writes are versions 5, 10, ...
                cache.awaiting(KEY, None)
                answered.append(v)
                cache.awaiting(KEY, str(v))

        def reader(
            cache: DetectorCache = cache, answered: list[int] = answered, bad: list[str] = bad
        ) -> None:
            for _ in range(200):
                newest = answered[-1]
                found = cache.current(KEY)
                if found is not None and int(found["metadata"]["resourceVersion"]) < newest:
                    bad.append(f"{found['metadata']['resourceVersion']} < {newest}")

        threads = [threading.Thread(target=f) for f in (watch, writer, reader)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert bad == []


def test_a_write_that_raises_leaves_the_watch_untrusted_until_a_get() -> None:
    cache = DetectorCache()
    cache.seen(KEY, body("10"))

    def failing() -> str | None:
        raise TimeoutError("the API server did not answer")

    with pytest.raises(TimeoutError):
        cache.write(KEY, failing)
    cache.seen(KEY, body("11"))
    assert cache.current(KEY) is None
    cache.write(KEY, lambda: "12")
    cache.seen(KEY, body("12"))
    assert cache.current(KEY) == body("12")
