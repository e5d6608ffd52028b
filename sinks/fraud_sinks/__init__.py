"""Alert sinks: processes that consume the scorer's output topics (decisions, alerts) and the
analysts' labels, and deliver them somewhere slow (a webhook, the PostgreSQL case store), in
their own pods so the scorer's hot path never waits on HTTP or SQL.

They run on the shared Kafka runtime (:mod:`fraud_runtime`) and read the scorer's wire
contract (:mod:`fraud_scorer.contract`); an import contract keeps them away from the scorer's
pipeline, model and service, so a sink never loads onnxruntime or numpy.
"""
