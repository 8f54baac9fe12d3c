"""Fixtures for the converter tests (helpers to import live in onnx_helpers.py)."""

from onnx_helpers import rng  # noqa: F401  (the fixture)
