"""Rules as a product, offline: ``fraud-rules check`` (and, next, backtests)."""
