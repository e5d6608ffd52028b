"""The FraudDetector Kubernetes operator (kopf). Built in a later issue."""
