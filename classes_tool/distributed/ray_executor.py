"""Run a layer campaign's work units on Ray actors; the driver is the only writer of the store.

What travels: the driver reads every file the campaign needs (model, data, calibration, a JSON
error model) once and puts the bytes into Ray's object store; each actor writes them into a
folder of its own, builds the campaign from the same config (paths pointing there), loads the
model once, and builds each target's traced step once, with the driver's value ranges so that
no worker calibrates differently. No shared file system is needed.

What is identical: a unit is a range of (fault, input) pairs cut at fixed positions; its sites
come from (seed, target, fault index) and its golden terms from the same traced step at the
same batch size, so a unit's rows are the same whichever process computes it, in whatever
order. The driver commits each unit's rows whole as it arrives; `--resume` skips stored units.

Faults: an actor that dies (its process killed) loses only the units it was running; they go
back to the queue and a new actor is started in its place. A unit that raises ends the campaign
with one line naming the unit; the rows committed before stay. A cluster that cannot be reached
is one line.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from classes_tool.errors import UserError

#: Units in flight per actor: one computing, one waiting, so an actor never idles between units.
UNITS_PER_ACTOR = 2
#: Times a unit may be lost with its actor before the campaign gives up on it.
MAX_UNIT_LOSSES = 3


def import_ray():
    """Ray, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError("campaigns on several workers need Ray: pip install "
                        "'classes-tool[distributed]' (or pip install ray)") from None
    return ray


def _config_files(config) -> dict[str, Path]:
    """The files a campaign reads, by config field."""
    files = {"model": Path(config.model), "data": Path(config.data)}
    if config.calibration is not None:
        files["calibration"] = Path(config.calibration)
    if str(config.error_model).endswith(".json"):
        files["error_model"] = Path(config.error_model)
    return files


#: Seconds to wait for a cluster's head to accept a connection before saying it cannot be reached
#: (Ray itself retries for minutes).
CONNECT_TIMEOUT = 10.0


def _check_reachable(address: str) -> None:
    """A HOST:PORT address must accept a TCP connection; 'auto' and ray:// addresses are left
    to Ray (which says at once when no cluster runs on this machine)."""
    import socket

    if address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT):
            return
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise UserError(f"cannot reach the Ray cluster at {address}: {reason}") from None


class CampaignWorker:
    """A Ray actor: one copy of the campaign, its model loaded once, a traced step per target."""

    def __init__(self, config, files: dict[str, tuple[str, bytes]], ranges: dict[str, Any],
                 threads: int):
        import tensorflow as tf

        if threads > 0:  # before TensorFlow runs its first op in this process
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
            except RuntimeError:  # already initialised (a reused worker process): keep it
                pass
        from classes_tool.campaign.runner import Campaign

        self._folder = tempfile.mkdtemp(prefix="classes-tool-worker-")
        changes = {}
        for field, (name, data) in files.items():
            path = Path(self._folder) / field / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            changes[field] = str(path) if field == "error_model" else path
        campaign = Campaign(replace(config, **changes), quiet=True)
        campaign._prepare()
        self._campaign = campaign
        self._ranges = ranges
        self._runs: dict[int, Any] = {}

    def pid(self) -> int:
        return os.getpid()

    def compute(self, target: int, unit: tuple[int, int]):
        """The rows of one unit of target number `target`."""
        from classes_tool.campaign.runner import _TargetRun

        start = time.perf_counter()
        run = self._runs.get(target)
        if run is None:
            plan = self._campaign.plans[target]
            run = self._runs[target] = _TargetRun(self._campaign, plan, self._ranges[plan.name])
        _, local, inputs, faults, classified = run.compute(tuple(unit))
        return local, inputs, faults, classified, time.perf_counter() - start


class RayExecutor:
    """The driver's side: a pool of `CampaignWorker` actors fed with work units."""

    def __init__(self, campaign, ranges: dict[str, Any], workers: int | None = None,
                 address: str | None = None, threads_per_worker: int | None = None):
        self.ray = import_ray()
        self.campaign = campaign
        self.address = address
        local = address is None
        self.workers = workers
        if workers is not None and workers < 1:
            raise UserError(f"--workers must be at least 1, got {workers}")
        self.ranges = ranges
        self.threads = threads_per_worker
        self._started = False
        self._local = local

    def __enter__(self) -> RayExecutor:
        ray = self.ray
        started = time.perf_counter()
        if not ray.is_initialized():
            if not self._local:
                _check_reachable(self.address)
            try:
                if self._local:  # a runtime of this machine's own, on the loopback interface
                    cpus = max(self.workers or 1, os.cpu_count() or 1)
                    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                             configure_logging=False, _node_ip_address="127.0.0.1")
                else:
                    ray.init(address=self.address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise UserError(f"cannot reach the Ray cluster at {self.address or 'local'}: "
                                f"{first}") from None
            self._started = True
        resources = ray.cluster_resources()
        cpus = int(resources.get("CPU", 1))
        gpus = int(resources.get("GPU", 0))
        self.workers = self.workers or (gpus if gpus else cpus)
        self.threads = (self.threads if self.threads is not None
                        else max(1, cpus // self.workers))
        self.gpu_each = 1 if gpus >= self.workers else 0
        files = {field: (path.name, path.read_bytes())
                 for field, path in _config_files(self.campaign.config).items()}
        self._files_ref = ray.put(files)
        self._actor_class = ray.remote(num_cpus=0, num_gpus=self.gpu_each)(CampaignWorker)
        self.actors = [self._new_actor() for _ in range(self.workers)]
        ray.get([actor.pid.remote() for actor in self.actors])  # every actor has its model
        #: what the bench reads: start-up, units, the workers' compute time, and the driver's
        #: own time per unit (collecting, committing, counting)
        self.stats = {"startup_s": time.perf_counter() - started, "units": 0,
                      "compute_s": 0.0, "driver_s": 0.0, "run_s": 0.0}
        self._ready = time.perf_counter()
        return self

    def _new_actor(self):
        return self._actor_class.remote(self.campaign.config, self._files_ref, self.ranges,
                                        self.threads)

    def __exit__(self, *exc: object) -> None:
        if hasattr(self, "_ready"):
            self.stats["run_s"] = time.perf_counter() - self._ready
        for actor in getattr(self, "actors", []):
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 (already gone: nothing to release)
                pass
        if self._started:
            self.ray.shutdown()

    def target_run(self, runner) -> DistributedTargetRun:
        return DistributedTargetRun(self, runner)


class DistributedTargetRun:
    """`_TargetRun.run` with the units computed by the executor's actors."""

    def __init__(self, executor: RayExecutor, runner):
        self.executor = executor
        self.runner = runner  # the driver's local geometry, store, bar and tallies

    def run(self, first: int, last: int) -> None:
        ray, executor, runner = self.executor.ray, self.executor, self.runner
        plan, store = runner.plan, runner.store
        target = executor.campaign.plans.index(plan)
        stored = runner.stored_mask(last)
        queue = deque(runner.units(first, last, stored))
        losses: dict[tuple[int, int], int] = {}
        in_flight: dict[Any, tuple[Any, tuple[int, int]]] = {}
        load = {id(a): 0 for a in executor.actors}

        def submit() -> None:
            for actor in list(executor.actors):
                while queue and load[id(actor)] < UNITS_PER_ACTOR:
                    unit = queue.popleft()
                    in_flight[actor.compute.remote(target, unit)] = (actor, unit)
                    load[id(actor)] += 1

        submit()
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            ref = ready[0]
            actor, unit = in_flight.pop(ref)
            load[id(actor)] -= 1
            collect = time.perf_counter()
            try:
                local, inputs, faults, classified, compute_s = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError):
                losses[unit] = losses.get(unit, 0) + 1
                if losses[unit] > MAX_UNIT_LOSSES:
                    raise UserError(f"work unit {plan.name} pairs {unit[0]}-{unit[1]} was lost "
                                    f"with its worker {losses[unit]} times; rows stored before "
                                    "are kept: continue with --resume") from None
                queue.appendleft(unit)
                self._replace(actor, load, in_flight, queue)
                submit()
                continue
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None) or exc
                first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
                raise UserError(f"work unit {plan.name} pairs {unit[0]}-{unit[1]} failed: "
                                f"{type(cause).__name__}: {first}; rows stored before are "
                                "kept") from None
            store.add_arrays(faults, plan.offset + np.asarray(local), inputs, classified)
            runner.record((np.arange(*unit), local, inputs, faults, classified), stored)
            stats = executor.stats
            stats["units"] += 1
            stats["compute_s"] += compute_s
            stats["driver_s"] += time.perf_counter() - collect
            submit()

    def _replace(self, dead, load, in_flight, queue) -> None:
        """Swap a dead actor for a new one; units it still held go back to the queue."""
        executor = self.executor
        for ref, (actor, unit) in list(in_flight.items()):
            if actor is dead:
                del in_flight[ref]
                queue.appendleft(unit)
        index = executor.actors.index(dead)
        fresh = executor._new_actor()
        executor.actors[index] = fresh
        load.pop(id(dead), None)
        load[id(fresh)] = 0
