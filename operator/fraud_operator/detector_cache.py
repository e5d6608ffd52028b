"""The FraudDetectors as kopf's watch last delivered them, so that a pass can read its detector
from memory instead of GETting it (two GETs per detector on a start of 1,000, a fifth of the
operator's requests).

A body from the watch is as good as a GET unless it predates a write of our own (a status
patch, a cleared annotation): a pass reading such a body would decide on a status it has
already replaced (a canary it started, taken for never started). So every write of ours, and
every GET, names the ``resourceVersion`` the watch must deliver before its bodies are trusted
again; until then passes GET. Versions are only compared for equality, never ordered (the API
server's contract).

Someone else's edit that the watch has not delivered yet is no such hazard: a pass on the
older body is a pass that ran a moment earlier, and the edit's own event brings the next one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Final

import msgspec

Key = tuple[str, str]  # (namespace, name)
# A write whose outcome is unknown (it failed or timed out): trust nothing until a GET says
# where the detector is.
UNKNOWN: Final = ""


def version_of(body: dict[str, Any]) -> str | None:
    version = (body.get("metadata") or {}).get("resourceVersion")
    return str(version) if version else None


class DetectorCache:
    """Filled on kopf's loop (:meth:`seen`, :meth:`gone`), read by passes in worker threads;
    one lock keeps a version awaited by a pass from being cleared by an older event. Bodies are
    held as JSON (a detector's dict tree is several times its text) and decoded per pass, so
    a pass also never shares a dict with kopf."""

    def __init__(self) -> None:
        self._bodies: dict[Key, tuple[str | None, bytes]] = {}
        self._awaited: dict[Key, str] = {}
        self._lock = threading.Lock()

    def seen(self, key: Key, body: dict[str, Any]) -> None:
        """An event's body (added, modified, or listed at start)."""
        version, packed = version_of(body), msgspec.json.encode(body)
        with self._lock:
            self._bodies[key] = (version, packed)
            if version is not None and self._awaited.get(key) == version:
                del self._awaited[key]

    def gone(self, key: Key) -> None:
        with self._lock:
            self._bodies.pop(key, None)
            self._awaited.pop(key, None)

    def current(self, key: Key) -> dict[str, Any] | None:
        """The watch's body, when no write of ours (or newer GET) is still on its way."""
        with self._lock:
            found = None if key in self._awaited else self._bodies.get(key)
        if found is None:
            return None
        body: dict[str, Any] = msgspec.json.decode(found[1])
        return body

    def awaiting(self, key: Key, version: str | None) -> None:
        """The detector is at ``version`` now (our write's answer, or a GET's); ``None``: a
        write is under way or failed, its version unknown."""
        with self._lock:
            known = self._bodies.get(key)
            if version is not None and known is not None and known[0] == version:
                self._awaited.pop(key, None)  # the watch is there already
            else:
                self._awaited[key] = UNKNOWN if version is None else version

    def write(self, key: Key, write: Callable[[], str | None]) -> None:
        """Run ``write``, a write of ours to the detector that returns its new
        resourceVersion (None if it is gone): the watch's bodies are not trusted from before it
        starts until the watch delivers that version (for ever, if it raises, until a GET)."""
        self.awaiting(key, None)
        self.awaiting(key, write())
