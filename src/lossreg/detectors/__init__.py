"""Detector architectures and the registered model names."""
