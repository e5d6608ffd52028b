"""The analyst console: the case queue, case pages, labels and performance, over the case
store (docs/console.md)."""
