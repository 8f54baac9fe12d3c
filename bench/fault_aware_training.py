"""Does fault-aware fine-tuning make the shipped digits CNN tolerate activation faults?

Baseline: the shipped model, its activations on an 8-bit grid calibrated on the training data,
with `--probability` percent of them corrupted (`--injection-type`), accuracy on the test set.
Ours: the same model fine-tuned for `--epochs` epochs with the same faults injected in training
(on the same grid), then evaluated exactly like the baseline. Control: the same fine-tuning with
no faults (probability 0), to show the gain comes from the faults, not from extra epochs.

Evaluation seeds (fault positions) are disjoint from the training seeds; every model is evaluated
on the same evaluation seeds. Spread: standard deviation over evaluation seeds (baseline) and over
training seeds of the per-model mean (ours, control).

    python bench/fault_aware_training.py [--epochs 10 --train-seeds 3 --eval-seeds 10]

Last line: ``fault_aware_training: ratio=<ours / baseline> (baseline <acc>, ours <acc>)``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from classes_tool.quant.layers import apply_fault_injection  # noqa: E402
from classes_tool.quant.sweep import accuracy_under_faults, load_model, load_npz  # noqa: E402
from classes_tool.quant.training import fault_aware_fit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models/digits_cnn.h5"))
    ap.add_argument("--train", default=str(ROOT / "models/digits_train.npz"))
    ap.add_argument("--test", default=str(ROOT / "models/digits_test.npz"))
    ap.add_argument("--probability", type=float, default=5.0, help="percent of activations hit")
    ap.add_argument("--injection-type", default="random")
    ap.add_argument("--bit-width", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--train-seeds", type=int, default=3)
    ap.add_argument("--eval-seeds", type=int, default=10)
    ap.add_argument("--no-control", action="store_true", help="skip the fault-free fine-tuning")
    args = ap.parse_args()

    model = load_model(args.model)
    x, y = load_npz(args.train)
    xt, yt = load_npz(args.test)
    fi = {"probability": args.probability, "injection_type": args.injection_type,
          "bit_width": args.bit_width, "quantize_all": True, "epoch_interval": 1}
    eval_seeds = [1000 + i for i in range(args.eval_seeds)]
    print(f"{args.probability:g}% {args.injection_type} faults on the {args.bit_width}-bit "
          f"activations, {len(eval_seeds)} evaluation seeds, {args.train_seeds} training seeds, "
          f"{args.epochs} epochs")

    t0 = time.perf_counter()
    probe = apply_fault_injection(model, {**fi, "apply_during": "eval"}, x)
    clean = accuracy_under_faults(probe, xt, yt, 0.0, [0])[0]
    base = accuracy_under_faults(probe, xt, yt, args.probability, eval_seeds)
    print(f"plain model:        clean {clean:.4f}  under faults {np.mean(base):.4f} "
          f"± {np.std(base):.4f} (min {np.min(base):.4f})")

    def tuned(probability: float, label: str) -> list[float]:
        means = []
        for s in range(args.train_seeds):
            t = time.perf_counter()
            patched, _, _ = fault_aware_fit(model, x, y, {**fi, "probability": probability,
                                                          "seed": 100 + s},
                                            epochs=args.epochs, shuffle_seed=s)
            clean_s = accuracy_under_faults(patched, xt, yt, 0.0, [0])[0]
            accs = accuracy_under_faults(patched, xt, yt, args.probability, eval_seeds)
            means.append(float(np.mean(accs)))
            print(f"{label} seed {s}: clean {clean_s:.4f}  under faults {np.mean(accs):.4f} "
                  f"± {np.std(accs):.4f} (min {np.min(accs):.4f})  [{time.perf_counter() - t:.0f} s]")
        return means

    ours = tuned(args.probability, "fault-aware  ")
    if not args.no_control:
        control = tuned(0.0, "fault-free   ")
        print(f"control (fine-tuned without faults): {np.mean(control):.4f} ± {np.std(control):.4f}")
    print(f"fault-aware over training seeds: {np.mean(ours):.4f} ± {np.std(ours):.4f}; "
          f"total {time.perf_counter() - t0:.0f} s")
    b, o = float(np.mean(base)), float(np.mean(ours))
    print(f"fault_aware_training: ratio={o / b:.3f} (baseline {b:.4f}, ours {o:.4f})")


if __name__ == "__main__":
    main()
