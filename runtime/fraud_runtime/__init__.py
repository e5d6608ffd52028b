"""The runtime every Kafka process shares (the scorer, the sinks, and the stages to come).

- :mod:`~fraud_runtime.settings`: file + environment settings, Kafka and metrics sections;
- :mod:`~fraud_runtime.process`: the poll -> handle -> deliver -> store offsets -> commit loop,
  with readiness, broker health, signals and ``main``;
- :mod:`~fraud_runtime.offsets`: which offsets may be stored, and when;
- :mod:`~fraud_runtime.health`: ``/metrics``, ``/healthz`` and ``/readyz``;
- :mod:`~fraud_runtime.logs` and :mod:`~fraud_runtime.redact`: JSON logs with card numbers
  masked;
- :mod:`~fraud_runtime.dead_letters`: the ``dlq.*`` headers every dead letter carries.

Nothing here knows what a transaction, a model or a case is.
"""
