"""Multi-host: 2 processes x 4 simulated CPU devices on 127.0.0.1 (gloo collectives), started by the
local launcher, train, are preempted (SIGTERM to one of them), checkpoint and resume with the losses
of one process driving 8 devices."""
import os
import re
import subprocess
import sys
from pathlib import Path

from bridgetower_jax.metric_writer import read_metrics
from train_fixtures import ReferenceRuns

REPO = Path(__file__).resolve().parents[1]


def _launch_two_processes(workdir: Path, data_dir: str, tok_dir: str, faults: str = "",
                          expect: int = 0) -> str:
    settings = {**ReferenceRuns.STEPS, **{k: v for k, v in ReferenceRuns.MESH_8.items() if k != "mesh.num_devices"}}
    overrides = [f"--config.{k}={v}" for k, v in settings.items()]
    env = {k: v for k, v in os.environ.items() if k != "BRIDGETOWER_FAULTS"}
    result = subprocess.run(
        [sys.executable, str(REPO / "launch" / "launch.py"), "local", "-n", "2", "--devices-per-process", "4",
         "--timeout", "900", "--config", "configs/pretrain.py:tiny", "--workdir", str(workdir),
         "--data-dir", data_dir, "--tokenizer-dir", tok_dir, "--", *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=1000,
        env={**env, "BRIDGETOWER_FAULTS": faults} if faults else env)
    log = result.stdout + result.stderr
    assert result.returncode == expect, log[-6000:]
    return log


def _losses(workdir) -> dict:
    return {r["step"]: r["loss"] for r in read_metrics(workdir) if "loss" in r}


def test_two_processes_preempted_checkpoint_and_resume_like_one_process(demo_data, reference_runs, tmp_path):
    data_dir, tok_dir = demo_data
    multi = tmp_path / "multi"
    # One host of the pod is preempted: process 1 alone gets SIGTERM after step 1. JAX's preemption
    # service tells process 0, both stop after the same step with one checkpoint, and the launcher
    # exits 75 ("rerun the same command").
    log = _launch_two_processes(multi, data_dir, tok_dir, faults="sigterm_after_step@1:1", expect=75)
    stops = re.findall(r"\[process(\d)\] .*preempted \(SIGTERM\): stopped after step (\d+) with a complete "
                       r"checkpoint", log)
    assert sorted(p for p, _ in stops) == ["0", "1"] and len({s for _, s in stops}) == 1, log[-6000:]
    # Only process 1 got the signal (JAX's notifier logs it); process 0 learned of it from the service.
    assert re.search(r"\[process1\] .*SIGTERM caught", log) and not re.search(r"\[process0\] .*SIGTERM caught", log)
    stopped = int(stops[0][1])
    assert 1 <= stopped < ReferenceRuns.STEPS["total_steps"], log[-6000:]
    assert (multi / "checkpoints" / str(stopped)).exists()
    assert max(r["step"] for r in read_metrics(multi)) == stopped
    assert "rerun the same command to resume (exit code 75)" in log
    # The same command resumes from that checkpoint and finishes the run.
    log = _launch_two_processes(multi, data_dir, tok_dir)
    assert re.search(rf"resuming from \S*/checkpoints/{stopped}\b", log), log[-6000:]

    a, b = _losses(reference_runs.workdir(8)), _losses(multi)
    assert a.keys() == b.keys() == {1, 2, 3, 4}
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-5 * abs(a[step]), (step, a, b)
    assert (multi / "checkpoints" / "4").exists()
