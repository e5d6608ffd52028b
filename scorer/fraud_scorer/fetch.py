"""``python -m fraud_scorer.fetch --uri URI --digest sha256:HEX --dest DIR``: put a model
artifact in place before the scorer starts (the scorer pod's init container).

``URI`` names a model directory (``https://``, ``s3://``, ``gs://``, ``file://``, or
``http://`` with ``--allow-http``) holding ``manifest.json`` and ``model.onnx``. Object stores
are read with fsspec (s3fs, gcsfs: the ``s3`` and ``gcs`` extras, both in the scorer image)
and credentials from the pod's environment only: workload identity (EKS IRSA or Pod Identity,
GKE Workload Identity), never the URI or the FraudDetector. The manifest must have the
digest the FraudDetector pins (:func:`fraud_scorer.model.digest_of`), and ``model.onnx`` the
sha256 the manifest names; otherwise nothing is written and the exit code is 2. Redirects never
change the scheme to a weaker one (https to http) and no URL is shown with credentials. The
directory appears atomically (written beside ``DIR``, then renamed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import urllib.parse
import urllib.request
from http.client import HTTPMessage
from pathlib import Path
from typing import IO, Any

from fraud_runtime.redact import public_url

from fraud_scorer.config import OBJECT_STORE_SCHEMES, model_uri_problem
from fraud_scorer.model import EXPLAINER_FILE, MANIFEST_FILE, MODEL_FILE, digest_of

_MAX_BYTES = {MANIFEST_FILE: 1 << 20, MODEL_FILE: 512 << 20, EXPLAINER_FILE: 256 << 20}


class FetchError(Exception):
    pass


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to ``allowed`` schemes: https to http is refused even where
    http is allowed, and nothing redirects to file:// or ftp://."""

    def __init__(self, allowed: tuple[str, ...]) -> None:
        self.allowed = allowed

    def http_error_302(  # every redirect code comes here (the base class aliases them)
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: HTTPMessage
    ) -> Any:
        location = headers.get("location") or headers.get("uri") or ""
        target = urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, location))
        if target.scheme not in self.allowed or "@" in target.netloc:
            fp.close()
            raise FetchError(
                f"{public_url(req.full_url)} redirects to a {target.scheme or '?'}:// URL: "
                "refusing a redirect to another scheme or to a URL with credentials"
            )
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _read_object(url: str, scheme: str, limit: int) -> bytes:
    """One object from s3:// or gs://; credentials come from the client's default chain (the
    pod's workload identity, or the platform's AWS_* / GOOGLE_* environment)."""
    # gcsfs's experimental zonal-bucket support asks a gRPC control API for every bucket's
    # type first; three plain reads need none of it (set it to true to have it back).
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    try:
        import fsspec

        fsspec.get_filesystem_class(scheme)
    except ImportError:
        extra = {"s3": "s3", "gs": "gcs"}[scheme]
        raise FetchError(
            f"reading {scheme}:// needs the {extra} extra (pip install "
            f"'fraud-detector[{extra}]'); the scorer image has it"
        ) from None
    try:
        fs, path = fsspec.core.url_to_fs(url)
        with fs.open(path, "rb", cache_type="none") as f:
            body: bytes = f.read(limit + 1)
    except FileNotFoundError:
        raise FetchError(f"{url} does not exist") from None
    except PermissionError:
        raise FetchError(
            f"{url}: access denied; the scorer pods read it as spec.model.serviceAccountName, "
            "whose cloud role (workload identity) needs read access to it"
        ) from None
    except Exception as exc:  # the store's client, whatever it raises: a refusal, not a crash
        detail = " ".join(str(exc).split())[:300]
        raise FetchError(f"cannot read {url}: {type(exc).__name__}: {detail}") from None
    return body


def _read(uri: str, name: str, *, allow_http: bool) -> bytes:
    if problem := model_uri_problem(uri, allow_http=allow_http):
        raise FetchError(problem)
    url = uri.rstrip("/") + "/" + name
    scheme = urllib.parse.urlsplit(uri).scheme
    limit = _MAX_BYTES[name]
    if scheme in OBJECT_STORE_SCHEMES:
        body = _read_object(url, scheme, limit)
        if len(body) > limit:
            raise FetchError(f"{url} is larger than {limit >> 20} MiB")
        return body
    # A redirect may keep or strengthen the scheme asked for, never weaken it.
    allowed = ("https", "http") if scheme == "http" else ("https",)
    opener = urllib.request.build_opener(_NoDowngrade(allowed))
    try:
        with opener.open(url, timeout=60) as response:
            data: bytes = response.read(limit + 1)
    except OSError as exc:
        reason: Any = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
        raise FetchError(f"cannot read {public_url(url)}: {reason}") from None
    if len(data) > limit:
        raise FetchError(f"{public_url(url)} is larger than {limit >> 20} MiB")
    return data


def fetch(uri: str, digest: str, dest: Path, *, allow_http: bool = False) -> Path:
    """Fetch and verify the artifact at ``uri`` into ``dest``; raise :class:`FetchError`."""
    shown = public_url(uri)
    manifest = _read(uri, MANIFEST_FILE, allow_http=allow_http)
    if (actual := digest_of(manifest)) != digest:
        raise FetchError(
            f"{MANIFEST_FILE} at {shown} has digest {actual}, the FraudDetector pins {digest}: "
            "not the artifact that was approved (the digest is the sha256 of manifest.json; "
            "`fraud-train export` prints it)"
        )
    try:
        doc = json.loads(manifest)
        files = {MODEL_FILE: doc.get("sha256")}
        if doc.get("explainer_sha256") is not None:  # the trees, for reason codes
            files[EXPLAINER_FILE] = doc["explainer_sha256"]
    except (ValueError, AttributeError):
        raise FetchError(f"{MANIFEST_FILE} at {shown} is not a JSON object") from None
    fetched = {}
    for name, declared in files.items():
        body = _read(uri, name, allow_http=allow_http)
        if (sha := hashlib.sha256(body).hexdigest()) != declared:
            raise FetchError(f"{name} at {shown} has sha256 {sha}, its manifest names {declared}")
        fetched[name] = body
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest.parent))
    for name, body in fetched.items():
        (staging / name).write_bytes(body)
    (staging / MANIFEST_FILE).write_bytes(manifest)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(staging, dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fraud_scorer.fetch", description=__doc__)
    parser.add_argument("--uri", required=True)
    parser.add_argument("--digest", required=True, help="sha256:<hex> of manifest.json")
    parser.add_argument("--allow-http", action="store_true")
    parser.add_argument("--dest", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        fetch(args.uri, args.digest, args.dest, allow_http=args.allow_http)
    except FetchError as exc:
        print(f"refusing model: {exc}", file=sys.stderr)
        return 2
    print(f"model {args.digest[:19]} in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
