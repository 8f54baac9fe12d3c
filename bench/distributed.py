"""Campaigns on Ray: speed-up of 2 local workers over 1, the driver's share per unit, and how many
workers one driver can feed.

1. The same campaign (ResNet-style CIFAR CNN, faults after s1b0_conv1, 32 inputs) with 1 and 2
   local workers of one TensorFlow thread each; the time after start-up (Ray, actors, model
   loads) is compared, and the whole wall time beside it.
2. The driver's own time per unit (collecting a unit's rows, committing them to SQLite,
   counting them) as a share of a unit's compute time on a worker.
3. Fake workers that return precomputed rows as fast as Ray delivers them: the rows per second
   one driver commits, against what 64 workers of the model in (1) would produce.

    python bench/distributed.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import random_images, resnet_cifar  # noqa: E402

import classes_tool.campaign.runner as runner  # noqa: E402
import classes_tool.distributed.ray_executor as ray_executor  # noqa: E402
from classes_tool.campaign.runner import Campaign  # noqa: E402

FAULTS = 1200
INPUTS = 32


def campaign_config(model: Path, data: Path, faults: int = FAULTS) -> dict:
    return {"model": str(model), "data": str(data), "inputs": INPUTS,
            "targets": {"nodes": ["s1b0_conv1"]}, "faults": faults, "seed": 3,
            "batch_size": 256, "value_range": [-3.0, 3.0]}


def run(config: dict, out: Path, **options) -> tuple[float, dict]:
    start = time.perf_counter()
    campaign = Campaign(config, out=out, quiet=True, source=out.parent / "c.yaml", **options)
    stats: dict = {}
    original = ray_executor.RayExecutor.__exit__

    def keep_stats(self, *exc):  # the executor's figures, read as it closes
        result = original(self, *exc)
        stats.update(getattr(self, "stats", {}))
        return result

    ray_executor.RayExecutor.__exit__ = keep_stats
    try:
        campaign.run()
    finally:
        ray_executor.RayExecutor.__exit__ = original
    return time.perf_counter() - start, stats


class FakeWorker:
    """A worker's state that returns rows shaped like a real unit's, for any unit, without
    computing anything (what `LayerWorker` would return)."""

    def __init__(self, config, ranges, paths):
        self.inputs = INPUTS

    def compute(self, target: int, unit):
        q = np.arange(*unit)
        local, inputs = q // self.inputs, q % self.inputs
        n = len(q)
        faults = [{"fault_index": int(f), "target": "s1b0_conv1",
                   "pattern": "single", "params": {"site": int(f)}}
                  for f in np.unique(local)]
        classified = {"outcome": np.zeros(n, np.int32), "sdc5": np.zeros(n, bool),
                      "rel_error": np.zeros(n), "faulty_top1": np.zeros(n, np.int64),
                      "golden_top1": np.zeros(n, np.int64)}
        return local, inputs, faults, classified


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = tmp / "resnet.h5"
        resnet_cifar().save(model)
        data = tmp / "cifar_like.npz"
        np.savez(data, x=random_images(INPUTS))
        config = campaign_config(model, data)

        wall_local, _ = run(config, tmp / "local")
        wall_1, stats_1 = run(config, tmp / "one", workers=1, threads_per_worker=1)
        wall_2, stats_2 = run(config, tmp / "two", workers=2, threads_per_worker=1)
        work_1, work_2 = stats_1["run_s"], stats_2["run_s"]  # from actors ready to the end
        evals = FAULTS * INPUTS
        print(f"campaign: {FAULTS} faults x {INPUTS} inputs after s1b0_conv1; one process "
              f"(all cores) {wall_local:.1f} s; 1 worker {wall_1:.1f} s (start-up "
              f"{stats_1['startup_s']:.1f} s), 2 workers {wall_2:.1f} s (start-up "
              f"{stats_2['startup_s']:.1f} s)")
        print(f"  after start-up: 1 worker {work_1:.1f} s, 2 workers {work_2:.1f} s: speed-up "
              f"{work_1 / work_2:.2f}x (whole wall time {wall_1 / wall_2:.2f}x)")
        per_unit_compute = stats_2["compute_s"] / stats_2["units"]
        per_unit_driver = stats_2["driver_s"] / stats_2["units"]
        print(f"  driver per unit {1e3 * per_unit_driver:.1f} ms against {1e3 * per_unit_compute:.1f}"
              f" ms of compute on a worker: {per_unit_driver / per_unit_compute:.1%} "
              f"({stats_2['units']} units of {config['batch_size']} pairs)")
        worker_rate = evals / work_1

        real_worker = runner.LayerWorker
        runner.LayerWorker = FakeWorker  # what the driver sends its actors to build
        try:
            fake = campaign_config(model, data, faults=20_000)
            _, stats_f = run(fake, tmp / "fake", workers=8, threads_per_worker=1)
            fed = 20_000 * INPUTS / stats_f["run_s"]
        finally:
            runner.LayerWorker = real_worker
        print(f"  one driver committed {fed:.0f} rows/s from 8 fake workers; 64 workers of this "
              f"model would produce {64 * worker_rate:.0f} rows/s ({worker_rate:.0f} per worker "
              f"of one thread): {'enough' if fed >= 64 * worker_rate else 'NOT enough'}")
        print(f"distributed: ratio={work_1 / work_2:.2f} (baseline 1 worker {work_1:.1f} s, ours "
              f"2 workers {work_2:.1f} s after start-up; driver share per unit "
              f"{per_unit_driver / per_unit_compute:.1%}; driver feed {fed:.0f} rows/s against "
              f"{64 * worker_rate:.0f} for 64 workers)")


if __name__ == "__main__":
    main()
