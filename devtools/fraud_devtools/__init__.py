"""Development and demo tools: an in-process Kafka broker (librdkafka's mock cluster), free
ports and readiness waits, a paced producer of synthetic transactions, and ``make demo``.

Its own distribution (``fraud-detector-devtools``, ``devtools/pyproject.toml``): production
images never install it, and product code never imports it (an import contract says so).
"""
