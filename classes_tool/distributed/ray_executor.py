"""Run a campaign's work units on Ray actors; the driver is the only writer of the store.

This module knows no target: a target hands it the files its workers need and a picklable
factory that builds a worker's state from them (for a layers campaign: the model loaded once,
each target's traced step built once, with the driver's value ranges so that no worker
calibrates differently), and asks it to compute lists of work units.

What travels: the driver reads every file once and puts the bytes into Ray's object store;
each actor writes them into a folder of its own and builds its state there. No shared file
system is needed.

What is identical: a target cuts its work into units at fixed positions whose results depend
on the seed and the unit alone (for a layers campaign a range of (fault, input) pairs, its sites
drawn from (seed, target, fault index), its golden terms from the same traced step at the same
batch size), so a unit's rows are the same whichever process computes it, in whatever order.
The driver commits each unit's rows whole as it arrives; `--resume` skips stored units.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


class UnitWorker:
    """A Ray actor: the files written into a folder of its own, then `factory(paths)` built
    once (a target's model loaded, its steps traced), which computes units until the end."""

    def __init__(self, factory: Callable[[dict[str, Path]], Any],
                 files: dict[str, tuple[str, bytes]], threads: int):
        import tensorflow as tf

        if threads > 0:  # before TensorFlow runs its first op in this process
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
            except RuntimeError:  # already initialised (a reused worker process): keep it
                pass
        self._folder = tempfile.mkdtemp(prefix="classes-tool-worker-")
        paths = {}
        for field, (name, data) in files.items():
            path = Path(self._folder) / field / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            paths[field] = path
        self._state = factory(paths)

    def pid(self) -> int:
        return os.getpid()

    def compute(self, key: Any, unit: Any) -> tuple[Any, float]:
        """What `factory(paths).compute(key, unit)` returns, and the seconds it took."""
        start = time.perf_counter()
        result = self._state.compute(key, unit)
        return result, time.perf_counter() - start


class RayExecutor:
    """The driver's side: a pool of `UnitWorker` actors fed with work units.

    `files` are the files a worker needs (by field); `factory(paths)` builds a worker's state
    from their copies there and must be picklable (a module-level class or function, or a
    `functools.partial` of one); its `compute(key, unit)` returns a unit's result.
    """

    def __init__(self, files: dict[str, Path], factory: Callable[[dict[str, Path]], Any],
                 workers: int | None = None, address: str | None = None,
                 threads_per_worker: int | None = None):
        self.ray = import_ray()
        self.files = {field: Path(path) for field, path in files.items()}
        self.factory = factory
        self.address = address
        local = address is None
        self.workers = workers
        if workers is not None and workers < 1:
            raise UserError(f"--workers must be at least 1, got {workers}")
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
        files = {field: (path.name, path.read_bytes()) for field, path in self.files.items()}
        self._files_ref = ray.put(files)
        self._actor_class = ray.remote(num_cpus=0, num_gpus=self.gpu_each)(UnitWorker)
        self.actors = [self._new_actor() for _ in range(self.workers)]
        ray.get([actor.pid.remote() for actor in self.actors])  # every actor has its model
        #: what the bench reads: start-up, units, the workers' compute time, and the driver's
        #: own time per unit (collecting, committing, counting)
        self.stats = {"startup_s": time.perf_counter() - started, "units": 0,
                      "compute_s": 0.0, "driver_s": 0.0, "run_s": 0.0}
        self._ready = time.perf_counter()
        return self

    def _new_actor(self):
        return self._actor_class.remote(self.factory, self._files_ref, self.threads)

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

    def run_units(self, key: Any, units: list, commit: Callable[[Any, Any], None],
                  name: Callable[[Any], str]) -> None:
        """Compute every unit of `key` on the actors and `commit(unit, result)` each on the
        driver as it arrives (in any order). A unit lost with its actor runs again on a new
        one; a unit that raises ends the run with one line (`name(unit)` says which unit)."""
        ray = self.ray
        queue = deque(units)
        losses: dict[Any, int] = {}
        in_flight: dict[Any, tuple[Any, Any]] = {}
        load = {id(a): 0 for a in self.actors}

        def submit() -> None:
            for actor in list(self.actors):
                while queue and load[id(actor)] < UNITS_PER_ACTOR:
                    unit = queue.popleft()
                    in_flight[actor.compute.remote(key, unit)] = (actor, unit)
                    load[id(actor)] += 1

        submit()
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            ref = ready[0]
            actor, unit = in_flight.pop(ref)
            load[id(actor)] -= 1
            collect = time.perf_counter()
            try:
                result, compute_s = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError):
                losses[unit] = losses.get(unit, 0) + 1
                if losses[unit] > MAX_UNIT_LOSSES:
                    raise UserError(f"work unit {name(unit)} was lost with its worker "
                                    f"{losses[unit]} times; rows stored before are kept: "
                                    "continue with --resume") from None
                queue.appendleft(unit)
                self._replace(actor, load, in_flight, queue)
                submit()
                continue
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None) or exc
                first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
                raise UserError(f"work unit {name(unit)} failed: {type(cause).__name__}: "
                                f"{first}; rows stored before are kept") from None
            commit(unit, result)
            self.stats["units"] += 1
            self.stats["compute_s"] += compute_s
            self.stats["driver_s"] += time.perf_counter() - collect
            submit()

    def _replace(self, dead, load, in_flight, queue) -> None:
        """Swap a dead actor for a new one; units it still held go back to the queue."""
        for ref, (actor, unit) in list(in_flight.items()):
            if actor is dead:
                del in_flight[ref]
                queue.appendleft(unit)
        index = self.actors.index(dead)
        fresh = self._new_actor()
        self.actors[index] = fresh
        load.pop(id(dead), None)
        load[id(fresh)] = 0
