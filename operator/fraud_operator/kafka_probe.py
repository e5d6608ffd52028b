"""How many partitions the input topic has, when the brokers can be asked.

Used only to refuse ``maxReplicas`` above the partition count. Any failure (brokers not
reachable from the operator, no permission) means "unknown", never an error. Results are
cached for a few minutes so the periodic reconcile does not hammer the brokers, and asked by
one thread at a time per brokers and topic: a burst of detectors on the same cluster waits for
one answer instead of opening a client each (and blocking a worker each for the timeout), and
once an answer is known, passes meanwhile take it rather than wait for the new one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from typing import Any, Final

from fraud_operator.spec import FraudDetectorSpec

log = logging.getLogger("fraud_operator.kafka")
_TTL_S: Final = 300.0
_UNKNOWN_TTL_S: Final = 30.0  # brokers unreachable now may be reachable soon
_cache: dict[tuple[str, ...], tuple[float, int | None]] = {}
_asking: defaultdict[tuple[str, ...], threading.Lock] = defaultdict(threading.Lock)


def client_config(spec: FraudDetectorSpec, password: str | None) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": spec.kafka.bootstrap_servers,
        "socket.timeout.ms": 3000,
        "client.id": "fraud-operator",
    }
    auth, tls = spec.kafka.authentication, spec.kafka.tls
    if auth is not None:
        conf["sasl.mechanism"] = auth.type.upper()
        conf["sasl.username"] = auth.username
        conf["sasl.password"] = password or ""
    conf["security.protocol"] = {
        (False, False): "PLAINTEXT",
        (False, True): "SSL",
        (True, False): "SASL_PLAINTEXT",
        (True, True): "SASL_SSL",
    }[(auth is not None, tls is not None)]
    return conf


def partitions(spec: FraudDetectorSpec, password: str | None, timeout_s: float = 3.0) -> int | None:
    conf = client_config(spec, password)
    key = tuple(
        str(conf.get(k)) for k in ("bootstrap.servers", "security.protocol", "sasl.username")
    )
    key += (spec.topics.input,)
    asking = _asking[key]
    if not asking.acquire(blocking=False):
        # Another pass is asking these brokers: an answer already known, however old, is good
        # enough for this one (a burst of detectors does not queue behind one timeout).
        cached = _cache.get(key)
        if cached is not None:
            return cached[1]
        asking.acquire()
    try:
        cached = _cache.get(key)
        if cached is not None:
            age = time.monotonic() - cached[0]
            if age < (_TTL_S if cached[1] is not None else _UNKNOWN_TTL_S):
                return cached[1]
        count = _ask(spec, conf, timeout_s)
        _cache[key] = (time.monotonic(), count)
        return count
    finally:
        asking.release()


def _ask(spec: FraudDetectorSpec, conf: dict[str, Any], timeout_s: float) -> int | None:
    try:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(conf)
        meta = admin.list_topics(topic=spec.topics.input, timeout=timeout_s)
        topic = meta.topics.get(spec.topics.input)
        count = len(topic.partitions) if topic is not None and topic.error is None else None
    except Exception as exc:
        log.info("partition count of %s unknown: %s", spec.topics.input, exc)
        count = None
    return count
