"""``python -m fraud_scorer.preflight --uri URI --digest sha256:HEX``: can this scorer serve
that model?

Run by the operator as a Job before a candidate model gets any traffic: fetch and verify the
artifact (its digest pins manifest and graph), then load it exactly as the scorer would -
manifest, feature set and names, graph input width, output, warm-up inference. Exit 0 when it
would load, 2 (with the reason on stderr, which becomes the Job's termination message) when it
would not.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from fraud_scorer import feature_sets
from fraud_scorer.feature_defs import parse_feature_set
from fraud_scorer.feature_sets import V1, FeatureSet
from fraud_scorer.fetch import FetchError, fetch
from fraud_scorer.model import ModelError, load_model

TERMINATION_LOG = Path("/dev/termination-log")


def check(uri: str, digest: str, *, allow_http: bool = False, features: FeatureSet = V1) -> str:
    with tempfile.TemporaryDirectory(prefix="preflight-") as tmp:
        fetched = fetch(uri, digest, Path(tmp) / "model", allow_http=allow_http)
        model = load_model(fetched, digest=digest, features=features)
        return f"model {model.version} loads: {len(model.manifest.feature_names)} features"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fraud_scorer.preflight", description=__doc__)
    parser.add_argument("--uri", required=True)
    parser.add_argument("--digest", required=True, help="sha256:<hex> of manifest.json")
    parser.add_argument("--allow-http", action="store_true")
    parser.add_argument(
        "--features", default=None, help="the declared feature set, as JSON (default: v1)"
    )
    args = parser.parse_args(argv)
    try:
        features = (
            feature_sets.declared(parse_feature_set(json.loads(args.features)))
            if args.features
            else V1
        )
        print(check(args.uri, args.digest, allow_http=args.allow_http, features=features))
    except (FetchError, ModelError, ValueError) as exc:  # ValueError: a bad --features
        message = f"model preflight failed: {exc}"
        print(message, file=sys.stderr)
        if TERMINATION_LOG.parent.is_dir() and TERMINATION_LOG.exists():
            TERMINATION_LOG.write_text(message[:4096])
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
