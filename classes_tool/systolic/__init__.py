"""Systolic-array target: register-level fault simulation of matrix products and convolutions.

The Keras layers live in `classes_tool.systolic.layers` (they import TensorFlow); campaigns in
`classes_tool.systolic.campaign`.
"""

from classes_tool.systolic.array import SystolicArray
from classes_tool.systolic.campaign import (
    load_systolic_config,
    run_systolic_campaign,
    run_systolic_config,
)
from classes_tool.systolic.dataflow import DATAFLOWS, LINES, resolve_dataflow
from classes_tool.systolic.dtypes import CastingError, default_mac_dtype
from classes_tool.systolic.faults import BitFlip, Fault, FixedValue, StuckAt

__all__ = [
    "DATAFLOWS",
    "LINES",
    "BitFlip",
    "CastingError",
    "Fault",
    "FixedValue",
    "StuckAt",
    "SystolicArray",
    "default_mac_dtype",
    "load_systolic_config",
    "resolve_dataflow",
    "run_systolic_campaign",
    "run_systolic_config",
]
