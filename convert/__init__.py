"""Keras model -> TFLite (float, int8) / Edge TPU / ONNX model bundles, with a quantization check.

Imports `edge`'s contracts (edge.classify.bundle) so that what it writes is exactly what the
device loads. The conversion pipeline itself is tracked in issue 4.
"""
