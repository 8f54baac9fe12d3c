"""Quantized-activation faults, fault-aware training and per-layer fault statistics."""
