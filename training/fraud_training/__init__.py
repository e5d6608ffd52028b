"""Synthetic data, training, evaluation and ONNX export for the fraud scorer."""
