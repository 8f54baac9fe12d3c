"""The shipped example end to end: patch the digits CNN after every Conv2D, then compare
faulty and golden predictions on the held-out digits."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from classes_tool.data import EXAMPLE_DATA, EXAMPLE_MODEL, load_npz


def run_demo(quiet: bool = False, sites: int = 500, seed: int = 7) -> dict[str, float]:
    import keras

    import classes_tool
    from classes_tool import patcher

    start = time.perf_counter()
    data = load_npz(EXAMPLE_DATA)
    x, y = data["x"], data["y"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "patched.h5"
        result = patcher.patch(EXAMPLE_MODEL, out, after_types=["Conv2D"], sites=sites,
                               seed=seed)
        model = keras.models.load_model(out)
    classes_tool.set_injection(model, False)
    golden = model.predict(x, verbose=0, batch_size=256)
    classes_tool.set_injection(model, True)
    faulty = model.predict(x, verbose=0, batch_size=256)
    g_top, f_top = golden.argmax(1), faulty.argmax(1)
    summary = {
        "golden_accuracy": float((g_top == y).mean()),
        "faulty_accuracy": float((f_top == y).mean()),
        "changed": float((g_top != f_top).mean()),
        "nan_or_inf": float((~np.isfinite(faulty)).any(1).mean()),
        "seconds": time.perf_counter() - start,
    }
    if not quiet:
        print(f"patched {EXAMPLE_MODEL.name}: ErrorSimulator after "
              f"{', '.join(result['targets'])} ({sites} sites each, seed {seed})")
        print(f"{len(x)} held-out digits, every sample gets its own random site in every "
              f"patched layer")
        print(f"golden accuracy {summary['golden_accuracy']:.3f}, faulty accuracy "
              f"{summary['faulty_accuracy']:.3f}")
        print(f"faulty top-1 differs from golden on {summary['changed']:.1%} of inputs; "
              f"NaN/Inf outputs on {summary['nan_or_inf']:.1%}; {summary['seconds']:.1f} s")
    return summary
