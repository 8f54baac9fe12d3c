"""Systolic-array target: register-level fault simulation of matrix products and convolutions."""

from classes_tool.systolic.array import CastingError, SystolicArray, default_mac_dtype
from classes_tool.systolic.dataflow import DATAFLOWS, LINES, resolve_dataflow
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
    "resolve_dataflow",
]
