"""``python -m fraud_operator``: run the operator (kopf) for all namespaces, or with
``--namespace`` (repeated) for those only, needing no cluster-wide right.

Several replicas are safe: kopf's peering elects one active instance (``--peering``, needs the
ClusterKopfPeering CRD from ``crds/kopf-peering.yaml``, or with ``--namespace`` the KopfPeering
CRD from ``crds/kopf-peering-namespaced.yaml``); the others wait. SIGTERM stops the
watches and in-flight handlers before exiting. Logs are JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import sys

import kopf

from fraud_operator.spec import DefaultImages


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fraud-operator", description=__doc__)
    parser.add_argument("--peering", default=None, help="ClusterKopfPeering name (HA)")
    parser.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority; the highest active replica works, the others wait "
        "(default: random, since equal priorities make every replica pause)",
    )
    parser.add_argument("--namespace", action="append", default=[], help="watch only these")
    parser.add_argument(
        "--allowed-image",
        action="append",
        default=[],
        metavar="PATTERN",
        help="scorer, sink and console images a FraudDetector may name (shell-style, e.g. "
        "'registry.example/fraud/*'; repeatable; default 'ghcr.io/fraud-detector/*')",
    )
    defaults = DefaultImages()
    parser.add_argument(
        "--scorer-image",
        default=defaults.scorer,
        help="the image of scorers, sinks and entity stages whose FraudDetector names none "
        f"(default {defaults.scorer}); always allowed",
    )
    parser.add_argument(
        "--console-image",
        default=defaults.console,
        help=f"the analyst console's image when the spec names none (default {defaults.console})",
    )
    parser.add_argument(
        "--metrics-host",
        default="0.0.0.0",  # noqa: S104 - scraped and probed from other pods
        help="address of /metrics and the liveness probe",
    )
    parser.add_argument("--metrics-port", type=int, default=8080, help="port of /metrics")
    parser.add_argument(
        "--health-port", type=int, default=8081, help="port of the liveness probe (/healthz)"
    )
    parser.add_argument(
        "--prometheus-url",
        default=None,
        help="Prometheus for canary analysis (or FRAUD_OPERATOR_PROMETHEUS_URL; "
        "spec.rollout.prometheusUrl overrides it per detector)",
    )
    parser.add_argument("--verbose", action="store_true", help="kopf's debug logging")
    return parser


ROUTINE = tuple(
    f"{what} '{handler}' succeeded."
    for what, handler in (("Timer", "resync"), ("Handler", "on_detector_event"),
                          ("Handler", "child"))
)  # fmt: skip


def _quiet_routine(record: logging.LogRecord) -> bool:
    """Drop kopf's line for each successful timer tick and event handler: one per detector per
    tick (33 a second with 1,000 detectors) and per watched event, saying nothing. Failures
    are still logged, and a pass logs what it changed."""
    return not record.getMessage().endswith(ROUTINE)


def main(argv: list[str] | None = None) -> int:
    args = arguments().parse_args(argv)
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON,
        log_prefix=True,
        log_refkey="object",
    )
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").addFilter(_quiet_routine)
    from fraud_operator import handlers  # registers the handlers

    handlers.OPTIONS.update(
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port,
        peering=args.peering,
        namespaces=tuple(args.namespace),
        allowed_images=tuple(args.allowed_image) or handlers.OPTIONS["allowed_images"],
        default_images=DefaultImages(scorer=args.scorer_image, console=args.console_image),
    )
    if args.prometheus_url:
        handlers.OPTIONS["prometheus_url"] = args.prometheus_url

    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            standalone=args.peering is None,
            peering_name=args.peering,
            priority=args.priority if args.priority is not None else secrets.randbelow(1000) + 1,
            liveness_endpoint=f"http://{args.metrics_host}:{args.health_port}/healthz",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
