"""Real-time fraud scorer: Kafka in, CEL rules + ONNX model, decisions out."""
