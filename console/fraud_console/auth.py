"""Who is asking, and may they: the built-in login's password hashes, identities from a
trusted OIDC proxy, roles, and CSRF tokens. Pure functions; the app wires them to requests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import ip_address

from fraud_console.settings import ROLES, ProxyAuth, Role

# scrypt at N=2^14, r=8, p=1 (the cryptography library's and Django's interactive-login
# choice): about 50 ms and 16 MiB a login here.
_N, _R, _P = 1 << 14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=64 << 20)
    enc = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${enc(salt).decode()}${enc(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time against ``stored``; a malformed hash never matches."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=64 << 20,
            dklen=len(want),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


@dataclass(frozen=True)
class Identity:
    name: str
    role: Role

    def may(self, role: Role) -> bool:
        """At least ``role``: viewer < analyst < admin."""
        return ROLES.index(self.role) >= ROLES.index(role)


class Untrusted(Exception):
    """Identity headers from a client that is not the configured proxy."""


def from_proxy(client: str | None, headers: Mapping[str, str], proxy: ProxyAuth) -> Identity | None:
    """The identity the proxy vouches for; None when the user is in no mapped group (or the
    proxy sent no user). Headers from anywhere but ``trusted_proxies`` are refused outright:
    anyone could set them."""
    try:
        trusted = client is not None and any(
            ip_address(client) in net for net in proxy.trusted_proxies
        )
    except ValueError:
        trusted = False
    if not trusted:
        raise Untrusted(client or "unknown")
    user = headers.get(proxy.user_header, "").strip()
    if not user:
        return None
    groups = {g.strip() for g in headers.get(proxy.groups_header, "").split(",") if g.strip()}
    roles = [proxy.groups[g] for g in groups if g in proxy.groups]
    if not roles:
        return None
    return Identity(user, max(roles, key=ROLES.index))


def csrf_token(session: dict[str, object]) -> str:
    """The session's token (made on first use), echoed by every form and checked on POST."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def csrf_ok(session: Mapping[str, object], submitted: str | None) -> bool:
    token = session.get("csrf")
    return (
        isinstance(token, str)
        and submitted is not None
        and hmac.compare_digest(token.encode(), submitted.encode())
    )


class LoginThrottle:
    """Failed logins counted per key (a name, a client address) over a sliding ``window_s``:
    after ``limit``, attempts are refused without checking the password, so a guessing run
    gets a handful of tries per window and a flood costs no scrypt work. Kept in memory, per
    replica; at most ``max_keys`` keys (the oldest go first)."""

    def __init__(
        self,
        limit: int,
        window_s: float = 300.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit, self.window_s, self.max_keys, self.clock = limit, window_s, max_keys, clock
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def blocked(self, key: str) -> bool:
        since = self.clock() - self.window_s
        times = [t for t in self._failures.get(key, []) if t > since]
        if times:
            self._failures[key] = times
        else:
            self._failures.pop(key, None)
        return len(times) >= self.limit

    def failed(self, key: str) -> None:
        self._failures.setdefault(key, []).append(self.clock())
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
