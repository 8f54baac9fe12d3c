"""Load patched model files in a process that never built them (the user's view).

Reads one JSON request per line ({"model": path, "x": npz path, "out": npz path}), loads the
model with plain `keras.models.load_model` after `import classes_tool`, and writes its outputs
with injection off and on. Answers one line per request: "ok" or "error: <message>".
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import classes_tool  # noqa: E402


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        try:
            model = keras.models.load_model(request["model"], compile=False)
            x = np.load(request["x"])["x"]
            classes_tool.set_injection(model, False)
            off = np.asarray(model(x, training=False))
            classes_tool.set_injection(model, True)
            on = np.asarray(model(x, training=False))
            np.savez(request["out"], off=off, on=on)
            print("ok", flush=True)
        except Exception as exc:  # noqa: BLE001 - reported to the test
            print("error: " + " ".join(str(exc).split())[:500], flush=True)


if __name__ == "__main__":
    main()
