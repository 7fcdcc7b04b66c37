"""Classifying insect crops with a TFLite model bundle (no TensorFlow on the device)."""
