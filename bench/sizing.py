"""Fixed (Leveugle, p = 0.5) against adaptive sizing for the same margin and confidence.

Runs the same campaign twice, once per sizing, on the shipped digits demo (configs/demo.yaml:
every Conv2D and fc1) and on a ResNet-style CIFAR-size CNN with random weights and inputs (two margins), and
prints per target the faults each sizing ran, the wall time, and the margin each reached (the
largest half-width of the four outcome intervals over faults, at the configured confidence).
The last line is the saving in faults on the target where adaptive sizing saves most, with the
saving over all targets beside it.

    python bench/sizing.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import random_images, resnet_cifar  # noqa: E402

from classes_tool.campaign.runner import Campaign  # noqa: E402
from classes_tool.config_reader import read_yaml  # noqa: E402
from classes_tool.results.report import target_estimates  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run(config: dict, out: Path, source: Path) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    Campaign(config, out=out, quiet=True, source=source).run()
    wall = time.perf_counter() - start
    rows, _ = target_estimates(out / "results.db")
    return wall, rows


def compare(name: str, config: dict, source: Path, tmp: Path) -> list[tuple[str, int, int]]:
    fixed_cfg = {**config, "sizing": "fixed"}
    adaptive_cfg = {**config, "sizing": "adaptive"}
    folder = name.replace(" ", "_").replace("=", "")
    t_fixed, fixed = run(fixed_cfg, tmp / f"{folder}_fixed", source)
    t_adapt, adapt = run(adaptive_cfg, tmp / f"{folder}_adaptive", source)
    print(f"{name}: margin {config['margin']} at {config['confidence']} confidence; wall time "
          f"fixed {t_fixed:.1f} s, adaptive {t_adapt:.1f} s ({t_fixed / t_adapt:.2f}x)")
    print(f"  {'target':<14}{'rates (masked/tol/crit/DUE) %':>32}{'fixed n':>9}{'margin':>8}"
          f"{'adaptive n':>12}{'margin':>8}{'saving':>8}")
    out = []
    for f, a in zip(fixed, adapt, strict=True):
        rates = "/".join(f"{100 * a[o + '_rate']:.1f}" for o in
                         ("masked", "tolerable_sdc", "critical_sdc", "due"))
        print(f"  {str(f['group']):<14}{rates:>32}{f['faults']:>9}"
              f"{100 * f['margin_achieved']:>7.2f}%{a['faults']:>12}"
              f"{100 * a['margin_achieved']:>7.2f}%{f['faults'] / a['faults']:>7.2f}x")
        out.append((f"{name}/{f['group']}", f["faults"], a["faults"]))
    return out


def main() -> None:
    pairs = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        demo = ROOT / "configs" / "demo.yaml"
        pairs += compare("digits demo", read_yaml(demo), demo, tmp)

        model = resnet_cifar()
        model_path = tmp / "resnet.h5"
        model.save(model_path)
        data_path = tmp / "cifar_like.npz"
        np.savez(data_path, x=random_images(32))
        resnet = {"model": str(model_path), "data": str(data_path), "inputs": 32,
                  "targets": {"nodes": ["stem", "s1b0_conv1", "s2b0_conv1"]},
                  "error_model": "auto", "seed": 3, "batch_size": 256}
        for margin, confidence in ((0.03, 0.95), (0.02, 0.99)):
            pairs += compare(f"ResNet-style e={margin} at {confidence:g}",
                             {**resnet, "margin": margin, "confidence": confidence},
                             tmp / "resnet.yaml", tmp)
    best = max(pairs, key=lambda p: p[1] / p[2])
    total_fixed, total_adapt = sum(p[1] for p in pairs), sum(p[2] for p in pairs)
    print(f"sizing: ratio={best[1] / best[2]:.2f} (baseline fixed {best[1]} faults, ours adaptive "
          f"{best[2]} faults, at {best[0]}; all targets {total_fixed} against {total_adapt} "
          f"faults: {total_fixed / total_adapt:.2f}x)")


if __name__ == "__main__":
    main()
