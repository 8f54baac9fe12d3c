"""Test session setup: quiet TensorFlow, register our layers, share the `digits_x` fixture.

Helpers that tests import live in `tests/helpers.py` (a conftest module name is shared by every
folder's conftest.py, so tests must not import from one)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import MODELS  # noqa: E402

import classes_tool  # noqa: E402, F401  (registers the layers)


@pytest.fixture
def digits_x() -> np.ndarray:
    return np.load(MODELS / "digits_test.npz")["x"][:64]
