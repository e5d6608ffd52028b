"""The init container's model fetch: over real HTTP (a server on 127.0.0.1) and file://."""

from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fraud_scorer.fetch import main
from fraud_scorer.model import load_model, read_manifest


@pytest.fixture
def served(model_dir: Path, tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "www"
    shutil.copytree(model_dir, root / "m1")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/m1/"
    finally:
        server.shutdown()
        server.server_close()


def test_fetches_and_verifies_over_http(served: str, model_dir: Path, tmp_path: Path) -> None:
    sha = read_manifest(model_dir).sha256
    dest = tmp_path / "models" / "current"
    assert main(["--uri", served, "--sha256", sha, "--dest", str(dest)]) == 0
    assert load_model(dest).version == "test-1"
    # Fetching again replaces the directory atomically.
    assert main(["--uri", served, "--sha256", sha, "--dest", str(dest)]) == 0
    assert sorted(p.name for p in dest.parent.iterdir()) == ["current"]


def test_a_wrong_hash_writes_nothing(
    served: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "models" / "current"
    assert main(["--uri", served, "--sha256", "0" * 64, "--dest", str(dest)]) == 2
    assert "the FraudDetector expects 0000" in capsys.readouterr().err
    assert not dest.exists()


def test_file_uri_and_bad_schemes(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sha = read_manifest(model_dir).sha256
    dest = tmp_path / "current"
    assert main(["--uri", model_dir.as_uri(), "--sha256", sha, "--dest", str(dest)]) == 0
    assert main(["--uri", "ftp://example/m", "--sha256", sha, "--dest", str(dest)]) == 2
    assert "unsupported model URI scheme 'ftp'" in capsys.readouterr().err
    assert main(["--uri", (tmp_path / "nope").as_uri(), "--sha256", sha, "--dest", str(dest)]) == 2


def test_preflight_loads_the_model_like_the_scorer(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fraud_scorer.preflight import main as preflight

    sha = read_manifest(model_dir).sha256
    assert preflight(["--uri", model_dir.as_uri(), "--sha256", sha]) == 0
    assert "model test-1 loads: 14 features" in capsys.readouterr().out
    # A manifest for another feature set: fetched fine, refused on load.
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    manifest = (
        (other / "manifest.json")
        .read_text()
        .replace('"feature_set_version": "v1"', '"feature_set_version": "v9"')
    )
    (other / "manifest.json").write_text(manifest)
    assert preflight(["--uri", other.as_uri(), "--sha256", sha]) == 2
    assert "feature set 'v9'" in capsys.readouterr().err
