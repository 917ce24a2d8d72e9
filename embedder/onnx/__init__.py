"""Embedders as ONNX files: read and run within bounds, the input contract, export."""
