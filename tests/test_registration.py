"""`import classes_tool` loads no TensorFlow, yet every layer the tool writes is registered by the
time Keras loads a file: whatever order the user imports things in (issue 20)."""

import subprocess
import sys

import pytest
from helpers import MODELS

from classes_tool.cli import main
from classes_tool.registration import LAYER_MODULES

OURS = ("import keras.src.saving.object_registration as r; "
        "print(sorted(k for k in r.GLOBAL_CUSTOM_OBJECTS if k.startswith('classes_tool>')))")


def _python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_import_classes_tool_loads_neither_tensorflow_nor_keras():
    out = _python("import sys, classes_tool; print(sorted(m for m in sys.modules if "
                  "m.split('.')[0] in ('tensorflow', 'keras', 'numpy', 'ray')))")
    assert out == "[]"


@pytest.mark.parametrize("command", [["--help"], ["report", "missing.db"]])
def test_help_and_report_load_no_tensorflow(command):
    code = ("import sys\nfrom classes_tool.cli import main\ntry:\n    main(" + repr(command) +
            ")\nexcept SystemExit:\n    pass\nprint('tensorflow' in sys.modules)")
    assert _python(code) == "False"


@pytest.fixture(scope="module")
def patched(tmp_path_factory):
    out = tmp_path_factory.mktemp("reg") / "patched.keras"
    assert main(["patch", str(MODELS / "digits_cnn.h5"), "--after", "conv4", "--sites", "5",
                 "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def every_layer():
    return _python("from classes_tool.registration import register_layers; "
                   f"register_layers(); {OURS}")


LOAD = ("m = keras.models.load_model({path!r}); "
        "assert classes_tool.simulators(m), 'no ErrorSimulator'; ")


@pytest.mark.parametrize("order", [
    "import classes_tool, keras; {load}",
    "import keras, classes_tool; {load}",
    "import classes_tool, tensorflow as tf; keras = tf.keras; {load}",
    # keras first imported by one of our own modules, halfway through its own imports
    "import classes_tool; from classes_tool.campaign.runner import Campaign; import keras; "
    "{load}",
    "import classes_tool.graph, keras, classes_tool; {load}",
])
def test_every_layer_is_registered_whatever_the_import_order(order, patched, every_layer):
    code = order.format(load=LOAD.format(path=str(patched))) + OURS
    assert _python(code) == every_layer
    assert "ErrorSimulator" in every_layer and "LIF" in every_layer


@pytest.mark.parametrize("module", LAYER_MODULES)
def test_each_layer_module_imported_first_registers_all(module, every_layer):
    assert _python(f"import {module}; {OURS}") == every_layer
