"""Multi-host: 2 processes x 4 simulated CPU devices on 127.0.0.1 (gloo collectives), started by the
local launcher, train, checkpoint and resume with the losses of one process driving 8 devices."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

from bridgetower_jax.metric_writer import read_metrics
from train_fixtures import ReferenceRuns

REPO = Path(__file__).resolve().parents[1]


def _launch_two_processes(workdir: Path, data_dir: str, tok_dir: str) -> None:
    settings = {**ReferenceRuns.STEPS, **{k: v for k, v in ReferenceRuns.MESH_8.items() if k != "mesh.num_devices"}}
    overrides = [f"--config.{k}={v}" for k, v in settings.items()]
    result = subprocess.run(
        [sys.executable, str(REPO / "launch" / "launch.py"), "local", "-n", "2", "--devices-per-process", "4",
         "--timeout", "900", "--config", "configs/pretrain.py:tiny", "--workdir", str(workdir),
         "--data-dir", data_dir, "--tokenizer-dir", tok_dir, "--", *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=1000)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def _losses(workdir) -> dict:
    return {r["step"]: r["loss"] for r in read_metrics(workdir) if "loss" in r}


def test_two_processes_train_checkpoint_resume_like_one_process(demo_data, reference_runs, tmp_path):
    data_dir, tok_dir = demo_data
    multi = tmp_path / "multi"
    _launch_two_processes(multi, data_dir, tok_dir)
    # Stop the multi-host run "after step 2": drop its last checkpoint and later records, resume.
    shutil.rmtree(multi / "checkpoints" / "4")
    kept = [r for r in read_metrics(multi) if r["step"] <= 2]
    (multi / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    _launch_two_processes(multi, data_dir, tok_dir)

    a, b = _losses(reference_runs.workdir(8)), _losses(multi)
    assert a.keys() == b.keys() == {1, 2, 3, 4}
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-5 * abs(a[step]), (step, a, b)
    assert (multi / "checkpoints" / "4").exists()
