"""Injection campaigns: outcome classes, statistical sizing, the SQLite result store, the report.

Kept free of imports on purpose: the store and report modules are used by tools that must start
fast and never need TensorFlow (e.g. `classes-tool report`). Import the submodules directly.
"""
