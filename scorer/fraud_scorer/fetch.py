"""``python -m fraud_scorer.fetch --uri URI --sha256 HEX --dest DIR``: put a model artifact in
place before the scorer starts (the scorer pod's init container).

``URI`` names a model directory (``https://``, ``http://`` or ``file://``) holding
``model.onnx`` and ``manifest.json``. The ONNX file must hash to ``--sha256`` (the value in the
FraudDetector) and to the manifest's own ``sha256``; otherwise nothing is written and the exit
code is 2. The directory appears atomically (written beside ``DIR``, then renamed).
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
from pathlib import Path

from fraud_scorer.model import MANIFEST_FILE, MODEL_FILE

_MAX_BYTES = 512 << 20


class FetchError(Exception):
    pass


def _read(uri: str, name: str) -> bytes:
    url = uri.rstrip("/") + "/" + name
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("https", "http", "file"):
        raise FetchError(
            f"unsupported model URI scheme {scheme!r} (use https://, http:// or file://)"
        )
    try:
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - scheme checked
            data: bytes = response.read(_MAX_BYTES + 1)
    except OSError as exc:
        raise FetchError(f"cannot read {url}: {exc}") from exc
    if len(data) > _MAX_BYTES:
        raise FetchError(f"{url} is larger than {_MAX_BYTES >> 20} MiB")
    return data


def fetch(uri: str, sha256: str, dest: Path) -> Path:
    model, manifest = _read(uri, MODEL_FILE), _read(uri, MANIFEST_FILE)
    actual = hashlib.sha256(model).hexdigest()
    if actual != sha256:
        raise FetchError(
            f"{MODEL_FILE} at {uri} has sha256 {actual}, the FraudDetector expects {sha256}"
        )
    try:
        declared = json.loads(manifest).get("sha256")
    except (ValueError, AttributeError) as exc:
        raise FetchError(f"{MANIFEST_FILE} at {uri} is not a JSON object") from exc
    if declared != actual:
        raise FetchError(f"{MANIFEST_FILE} at {uri} names sha256 {declared}, not {actual}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest.parent))
    (staging / MODEL_FILE).write_bytes(model)
    (staging / MANIFEST_FILE).write_bytes(manifest)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(staging, dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fraud_scorer.fetch", description=__doc__)
    parser.add_argument("--uri", required=True)
    parser.add_argument("--sha256", required=True)
    parser.add_argument("--dest", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        fetch(args.uri, args.sha256, args.dest)
    except FetchError as exc:
        print(f"refusing model: {exc}", file=sys.stderr)
        return 2
    print(f"model {args.sha256[:12]} in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
