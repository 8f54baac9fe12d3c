"""SNN campaign speed: faults per second, batched rounds vs one fault per forward pass.

Both run the same engine on the shipped spiking CNN and the same test samples; the baseline
gives every fault its own full forward pass (no late start, no early stop), ours puts many
single-fault rounds into one enlarged batch with late start and early stop. The baseline runs a
subset of the faults (it is slow); faults per second are compared. Results are checked equal.
After the timed runs, each fault model's rounds run alone (detail only; each includes its own
golden pass).

    python bench/snn.py [--samples 100] [--faults 400] [--baseline-faults 40]
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

import keras  # noqa: E402
import numpy as np  # noqa: E402

from classes_tool.snn import faults as F  # noqa: E402
from classes_tool.snn.campaign import SpikingCampaign  # noqa: E402


def _groups(rounds: list) -> dict:
    groups: dict = {}
    for rnd in rounds:
        groups.setdefault((rnd[0].layer, rnd[0].model.name), []).append(rnd)
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--faults", type=int, default=400)
    parser.add_argument("--baseline-faults", type=int, default=40)
    args = parser.parse_args()
    model = keras.models.load_model(ROOT / "models/snn/snn_digits.keras", compile=False)
    data = np.load(ROOT / "models/snn/snn_digits_test.npz")
    x, y = data["x"][:args.samples], data["y"][:args.samples]
    camp = SpikingCampaign(model, x.shape[1:], name="bench", seed=0)
    share = args.faults // 4
    camp.inject_complete(F.DeadNeuron(), ["lif1"], sampling_k=share)
    camp.inject_complete(F.SaturatedNeuron(), ["lif2"], sampling_k=share)
    camp.inject_complete(F.ParametricNeuron("threshold"), ["lif2"], sampling_k=share)
    camp.inject_complete(F.DeadSynapse(), ["td_conv2"], sampling_k=args.faults - 3 * share)
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(camp.rounds), size=args.baseline_faults, replace=False))
    base = SpikingCampaign(model, x.shape[1:], name="bench-base")
    base.rounds = [camp.rounds[i] for i in pick]

    # warm up both paths (XLA compiles a few shapes) on a few rounds
    warm = SpikingCampaign(model, x.shape[1:])
    warm.rounds = camp.rounds[::max(1, len(camp.rounds) // 8)]
    warm.run((x, y), progress="silent")
    warm.run((x, y), progress="silent", rounds_per_pass=1, late_start=False, early_stop=False)

    t0 = time.perf_counter()
    res_base = base.run((x, y), progress="silent", rounds_per_pass=1, late_start=False,
                        early_stop=False)
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = camp.run((x, y), progress="silent")
    t_ours = time.perf_counter() - t0
    same = np.array_equal(res.scores[pick], res_base.scores)
    fps_base = len(base.rounds) / t_base
    fps_ours = len(camp.rounds) / t_ours
    changed = np.mean(np.any(res.scores != res.golden_scores[None], axis=-1))
    print(f"samples per fault: {len(x)}; golden accuracy {res.golden_accuracy():.4f}; "
          f"(fault, sample) pairs whose output changed: {100 * changed:.1f}%")
    print(f"baseline: {len(base.rounds)} faults in {t_base:.2f} s, one forward pass each")
    print(f"batched:  {len(camp.rounds)} faults in {t_ours:.2f} s")
    for (layer, model_name), rounds in _groups(camp.rounds).items():  # detail, after timing
        part = SpikingCampaign(model, x.shape[1:])
        part.rounds = rounds
        t0 = time.perf_counter()
        part.run((x, y), progress="silent")
        print(f"  {model_name} on {layer}: {len(rounds)} faults, "
              f"{len(rounds) / (time.perf_counter() - t0):.1f} faults/s alone")
    print(f"batched results equal one-at-a-time results: {same}")
    print(f"snn: ratio={fps_ours / fps_base:.1f}x (baseline {fps_base:.2f} faults/s, "
          f"ours {fps_ours:.2f} faults/s)")


if __name__ == "__main__":
    main()
