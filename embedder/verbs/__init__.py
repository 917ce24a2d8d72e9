"""What writes a run: the training pipeline, adding images, importing an ONNX model."""
