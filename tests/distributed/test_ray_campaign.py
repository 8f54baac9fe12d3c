"""Layer campaigns on a real local Ray runtime: the same rows as one process, a worker killed
mid-campaign, the driver killed then resumed, a failing unit, an unreachable cluster."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml
from helpers import MODELS, wait_for_rows
from helpers import stored_rows as _rows

from classes_tool.campaign.runner import Campaign, _TargetRun
from classes_tool.cli import main
from classes_tool.errors import UserError

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


def _config(tmp_path, name="c.yaml", **extra):
    cfg = {"model": str(MODELS / "digits_cnn.h5"), "data": str(MODELS / "digits_test.npz"),
           "inputs": 10, "targets": {"nodes": ["conv2", "fc1"]}, "faults": 30, "seed": 5,
           "batch_size": 40}
    cfg.update(extra)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_two_workers_store_the_rows_one_process_stores(tmp_path):
    # fixed sizing, aligned and ragged units (4 inputs: ragged), and adaptive stages
    for name, extra in (("fixed", {}), ("ragged", {"inputs": 4, "batch_size": 7}),
                        ("adaptive", {"faults": None, "sizing": "adaptive", "margin": 0.2,
                                      "confidence": 0.9, "pilot_faults": 10})):
        cfg = _config(tmp_path, f"{name}.yaml", **extra)
        local = Campaign(cfg, out=tmp_path / f"{name}_one", quiet=True)
        local.run()
        remote = Campaign(cfg, out=tmp_path / f"{name}_two", quiet=True, workers=2,
                          threads_per_worker=1)
        remote.run()
        assert len(_rows(local.db_path)) > 0
        assert _rows(remote.db_path) == _rows(local.db_path), name
        assert remote.faults_run == local.faults_run


def test_a_worker_killed_mid_campaign_loses_nothing(tmp_path):
    cfg = _config(tmp_path, faults=120, batch_size=20)
    local = Campaign(cfg, out=tmp_path / "one", quiet=True)
    local.run()
    remote = Campaign(cfg, out=tmp_path / "two", quiet=True, workers=2, threads_per_worker=1)
    killed = []

    def kill_one_worker():
        deadline = time.time() + 300
        while time.time() < deadline and remote._executor is None:
            time.sleep(0.05)
        executor = remote._executor
        if executor is None:
            return
        pid = ray.get(executor.actors[0].pid.remote())
        stored = wait_for_rows(remote.db_path, 200, timeout=deadline - time.time(),
                               pause=0.02)  # once some rows are stored, mid-campaign
        os.kill(pid, signal.SIGKILL)
        killed.append(stored)

    thread = threading.Thread(target=kill_one_worker)
    thread.start()
    remote.run()
    thread.join()
    assert killed and killed[0] < 2 * 120 * 10 / 2, f"not killed mid-campaign: {killed}"
    rows = _rows(remote.db_path)
    assert len(rows) == len(set((r[0], r[1]) for r in rows))  # no duplicate (fault, input)
    assert rows == _rows(local.db_path)


def test_the_driver_killed_then_resume_ends_with_the_same_rows(tmp_path):
    cfg = _config(tmp_path, faults=150, batch_size=20)
    clean = tmp_path / "clean"
    Campaign(cfg, out=clean, quiet=True).run()
    crashed = tmp_path / "crashed"
    proc = subprocess.Popen([sys.executable, "-m", "classes_tool.cli", "campaign", str(cfg),
                             "--out", str(crashed), "--quiet", "--workers", "2",
                             "--threads-per-worker", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    db = crashed / "results.db"
    wait_for_rows(db, 300, proc, timeout=300)
    assert proc.poll() is None, "the campaign finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    try:  # the Ray processes the driver started go with it
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    partial = len(_rows(db))
    assert 0 < partial < 2 * 150 * 10
    # resumed in one process: the rows of the units the workers finished are kept
    assert main(["campaign", str(cfg), "--out", str(crashed), "--resume", "--quiet"]) == 0
    assert _rows(db) == _rows(clean / "results.db")


def test_a_failing_unit_ends_the_campaign_in_one_line_and_keeps_the_rows(tmp_path):
    campaign = Campaign(_config(tmp_path), out=tmp_path / "run", quiet=True)
    campaign._prepare()
    ranges = {t: (0.0, 3.0) for t in campaign.targets}
    from classes_tool.results.store import ResultStore

    with ResultStore(campaign.db_path, meta=campaign.meta()) as store, \
            campaign.ray_executor(ranges, workers=1, threads_per_worker=1) as executor:
        class Broken(_TargetRun):
            def units(self, first, last, stored):  # a good unit, then one that cannot run
                return [(0, 40), (80, 40)]

        import numpy as np

        campaign._executor = executor
        local = Broken(campaign, campaign.plans[0], ranges[campaign.plans[0].name], store,
                       np.zeros((0, 2), np.int64), _Bar(), {"all": 0, "critical_sdc": 0},
                       np.zeros(4, np.int64))
        with pytest.raises(UserError, match=r"work unit conv2 pairs 80-40 failed: "):
            local.run(0, 30)
        assert store.count() == 40  # the good unit's rows stay


class _Bar:
    n, total = 0, 1

    def update(self, k):
        self.n += k

    def set_postfix_str(self, *args, **kwargs):
        pass


def test_an_unreachable_cluster_is_one_line(tmp_path, capsys):
    cfg = _config(tmp_path)
    assert main(["campaign", str(cfg), "--out", str(tmp_path / "o"), "--quiet", "--address",
                 "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_a_bad_worker_count_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:  # argparse's own exit for a bad option value
        main(["campaign", str(_config(tmp_path)), "--workers", "0"])
    assert exit_.value.code == 2
    assert "positive whole number" in capsys.readouterr().err


def test_without_ray_the_options_say_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    campaign = Campaign(_config(tmp_path), out=tmp_path / "run", quiet=True, workers=2)
    with pytest.raises(UserError, match=r"pip install 'classes-tool\[distributed\]'"):
        campaign.run()


def test_a_single_process_campaign_never_imports_ray(tmp_path):
    cfg = _config(tmp_path, faults=3)
    code = ("import sys\nfrom classes_tool.campaign.runner import Campaign\n"
            f"Campaign({str(cfg)!r}, out={str(tmp_path / 'run')!r}, quiet=True).run()\n"
            "print('ray' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
