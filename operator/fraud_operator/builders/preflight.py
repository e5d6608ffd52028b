"""The model preflight: a one-off Job that fetches a candidate model and loads it exactly as a
scorer would before it gets any traffic."""

from __future__ import annotations

import json
from typing import Any

from fraud_operator.builders.names import labels, preflight_name
from fraud_operator.builders.objects import (
    CONTAINER_SECURITY,
    Detector,
    fetch_args,
    model_identity,
    pod_spec,
    scorer_object,
)
from fraud_operator.spec import ModelRef


def preflight_job(d: Detector, model: ModelRef) -> dict[str, Any]:
    """A one-off Job that fetches the candidate model and loads it exactly as a scorer would
    (digest, feature set, warm-up) before it gets any traffic. One Job per artifact digest."""
    resources = d.spec.scorer.resources.model_dump(exclude_none=True)
    return scorer_object(
        d,
        "batch/v1",
        "Job",
        preflight_name(d, model),
        {
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": 600,
                "template": {
                    "metadata": {"labels": labels(d, "preflight")},
                    "spec": pod_spec(
                        d,
                        [
                            {
                                "name": "preflight",
                                "image": d.scorer_image,
                                "imagePullPolicy": d.spec.scorer.image_pull_policy,
                                "command": ["python", "-m", "fraud_scorer.preflight"],
                                "args": fetch_args(model)
                                + (
                                    ["--features", json.dumps(d.spec.features, sort_keys=True)]
                                    if d.spec.features is not None
                                    else []
                                ),
                                "resources": resources,
                                "securityContext": CONTAINER_SECURITY,
                                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
                            }
                        ],
                        [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
                        restartPolicy="Never",
                        **model_identity(model),
                    ),
                },
            }
        },
        "preflight",
    )
