"""ONNX to Keras conversion.

Importing this package registers the custom layers the converted models use, so
`keras.models.load_model` can reload a converted file after `import classes_tool.convert`.
"""

from . import layers  # noqa: F401  (registers the serialisable layers)
from .api import (
    ConversionReport,
    convert_onnx,
    convert_onnx_with_report,
    load_onnx_as_keras,
    parse_input_shapes,
    supported_ops,
)
from .converter import sanitize
from .verify import Differences, verify_differences, verify_model

__all__ = ["ConversionReport", "Differences", "convert_onnx", "convert_onnx_with_report",
           "load_onnx_as_keras", "parse_input_shapes", "sanitize", "supported_ops",
           "verify_differences", "verify_model"]
