"""launch/: dry-run commands (TPU, multi-slice, SLURM) parse back to the right arguments, the
shell scripts are shellcheck-clean and behave, and the local launcher trains with 2 processes."""
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAUNCH_DIR = REPO / "launch"
SHELL_SCRIPTS = sorted(LAUNCH_DIR.glob("*.sh"))

_spec = importlib.util.spec_from_file_location("bt_launch", LAUNCH_DIR / "launch.py")
launch = sys.modules["bt_launch"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(launch)

# Values with spaces and both kinds of quotes must reach the trainer unchanged.
DATA_DIR = "gs://bkt/data dir/it's"
OVERRIDE = '--config.experiment_note=say "hi" it\'s me'
ENV_FILE = f"""
# a test settings file
PROJECT=proj-1
ZONE=us-central2-b
TPU_NAME=bt-test
ACCELERATOR=v4-32
RUNTIME_VERSION=tpu-ubuntu2204-base
BUCKET=gs://bkt/prefix
DATA_DIR={shlex.quote(DATA_DIR)}
TOKENIZER_DIR=/opt/tok
CONFIG=configs/pretrain.py:base
TRAIN_ENV="TF_CPP_MIN_LOG_LEVEL=2 NOTE='a b'"
"""
WORKDIR = "gs://bkt/prefix/bridgetower/pretrain-base"
TRAIN_ARGS = ["-m", "bridgetower_jax.train", "--config", "configs/pretrain.py:base",
              "--workdir", WORKDIR, f"--config.data.data_dir={DATA_DIR}",
              "--config.data.tokenizer_dir=/opt/tok"]
LOCATION = ["--zone", "us-central2-b", "--project", "proj-1"]


@pytest.fixture
def env_file(tmp_path):
    path = tmp_path / "test.env"
    path.write_text(ENV_FILE)
    return str(path)


def dry_run(capsys, *argv):
    """Runs the launcher with --dry-run; returns (exit status, printed lines)."""
    status = launch.main(["--dry-run", *argv])
    out = capsys.readouterr().out
    return status, out.splitlines()


def commands(lines):
    """The printed commands (comments skipped), each split back into its arguments."""
    return [shlex.split(line) for line in lines if line and not line.startswith("#")]


def remote_command(gcloud_argv):
    """The words of the shell command that gcloud ssh runs on the workers."""
    return shlex.split(gcloud_argv[gcloud_argv.index("--command") + 1])


# ----------------------------------------------------------------------------------- TPU


def test_tpu_create_single_host_with_spot(capsys, env_file):
    status, lines = dry_run(capsys, "--env", env_file, "tpu", "create", "--spot")
    assert status == 0
    assert commands(lines) == [["gcloud", "compute", "tpus", "tpu-vm", "create", "bt-test", *LOCATION,
                                "--accelerator-type", "v4-32", "--version", "tpu-ubuntu2204-base", "--spot"]]


def test_tpu_create_multislice_uses_queued_resources(capsys, env_file):
    status, lines = dry_run(capsys, "--env", env_file, "tpu", "create", "--num-slices", "4",
                            "--qr-id", "my qr")
    assert status == 0
    assert commands(lines) == [["gcloud", "compute", "tpus", "queued-resources", "create", "my qr", *LOCATION,
                                "--accelerator-type", "v4-32", "--runtime-version", "tpu-ubuntu2204-base",
                                "--node-count", "4", "--node-prefix", "bt-test"]]


def test_tpu_create_queued_single_slice(capsys, env_file):
    _, lines = dry_run(capsys, "--env", env_file, "tpu", "create", "--queued")
    (argv,) = commands(lines)
    assert argv[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "bt-test"]
    assert argv[-2:] == ["--node-id", "bt-test"]


def test_tpu_setup_copies_code_and_installs_on_every_worker(capsys, env_file):
    status, lines = dry_run(capsys, "--env", env_file, "tpu", "setup")
    assert status == 0
    scp, unpack, setup = commands(lines)
    assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
    assert scp[5].endswith("/bt_code.tar.gz") and scp[6] == "bt-test:bt_code.tar.gz"
    assert scp[7:] == [*LOCATION, "--worker=all"]
    for argv in (unpack, setup):
        assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "bt-test"]
        assert "--worker=all" in argv
    assert "tar -xzf bt_code.tar.gz -C bridgetower_jax" in " ".join(remote_command(unpack))
    assert remote_command(setup) == ["cd", "bridgetower_jax", "&&", "bash", "launch/tpu_worker.sh", "setup"]


def test_setup_packs_the_checkout_without_venv_or_git(tmp_path):
    tarball = tmp_path / "code.tar.gz"
    count = launch.pack_code(REPO, str(tarball))
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    assert count == len(names)
    assert {"requirements.txt", "launch/tpu_worker.sh", "launch/launch.py", "bridgetower_jax/__init__.py"} <= names
    assert not any(name.startswith((".venv/", ".git/")) or "__pycache__" in name for name in names)


def test_tpu_setup_can_clone_instead(capsys, env_file):
    _, lines = dry_run(capsys, "--env", env_file, "tpu", "setup", "--repo-url",
                       "https://example.org/team/bt.git", "--repo-ref", "v1.0", "--num-slices", "2")
    clone, setup = commands(lines)
    assert clone[:6] == ["gcloud", "compute", "tpus", "queued-resources", "ssh", "bt-test"]
    assert {"--worker=all", "--node=all"} <= set(clone)
    assert remote_command(clone) == [
        "rm", "-rf", "bridgetower_jax", "&&", "git", "clone", "--quiet", "https://example.org/team/bt.git",
        "bridgetower_jax", "&&", "git", "-C", "bridgetower_jax", "checkout", "--quiet", "v1.0"]
    assert remote_command(setup)[-1] == "setup"


def test_tpu_run_sends_the_same_quoted_command_to_every_worker(capsys, env_file):
    status, lines = dry_run(capsys, "--env", env_file, "tpu", "run", "--", OVERRIDE, "--config.total_steps=10")
    assert status == 0
    start, follow = commands(lines)
    assert start[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "bt-test"]
    assert start[6:start.index("--command")] == [*LOCATION, "--worker=all"]
    assert remote_command(start) == [
        "cd", "bridgetower_jax", "&&", "env", "TF_CPP_MIN_LOG_LEVEL=2", "NOTE=a b",
        "bash", "launch/tpu_worker.sh", "run", "pretrain-base",
        *TRAIN_ARGS, OVERRIDE, "--config.total_steps=10"]
    assert "--worker=0" in follow
    assert remote_command(follow)[-3:] == ["logs", "--follow", "pretrain-base"]


def test_tpu_run_multislice_passes_num_slices_to_every_node(capsys, env_file):
    _, lines = dry_run(capsys, "--env", env_file, "tpu", "run", "--num-slices", "2", "--no-follow",
                       "--workdir", "gs://other/run 1")
    (start,) = commands(lines)
    assert start[:6] == ["gcloud", "compute", "tpus", "queued-resources", "ssh", "bt-test"]
    assert {"--worker=all", "--node=all"} <= set(start)
    words = remote_command(start)
    train = words[words.index("-m"):]
    assert train[train.index("--workdir") + 1] == "gs://other/run 1"
    assert train[-1] == "--config.mesh.num_slices=2"


def test_tpu_run_refuses_a_workdir_off_gcs(capsys, env_file):
    status = launch.main(["--dry-run", "--env", env_file, "tpu", "run", "--workdir", "/tmp/w"])
    assert status == 2
    assert "gs://" in capsys.readouterr().err


def test_tpu_logs_stop_delete(capsys, env_file):
    _, lines = dry_run(capsys, "--env", env_file, "tpu", "logs", "--worker", "3", "--follow")
    (logs,) = commands(lines)
    assert "--worker=3" in logs and remote_command(logs)[-4:] == ["--lines", "100", "--follow", "pretrain-base"]
    _, lines = dry_run(capsys, "--env", env_file, "tpu", "logs", "--fetch", "/tmp/my logs", "--num-workers", "2")
    mkdir, *fetches = commands(lines)
    assert mkdir == ["mkdir", "-p", "/tmp/my logs"]
    assert [f[5:7] for f in fetches] == [["bt-test:bt_logs/pretrain-base.log", f"/tmp/my logs/worker-{i}.log"]
                                         for i in range(2)]
    _, lines = dry_run(capsys, "--env", env_file, "tpu", "stop")
    assert remote_command(commands(lines)[0])[-1] == "stop"
    _, lines = dry_run(capsys, "--env", env_file, "tpu", "delete", "--num-slices", "2")
    assert commands(lines) == [["gcloud", "compute", "tpus", "queued-resources", "delete", "bt-test",
                                *LOCATION, "--force", "--quiet"]]


def test_flags_override_the_env_file_and_nothing_is_guessed(capsys, env_file, tmp_path):
    _, lines = dry_run(capsys, "--env", env_file, "tpu", "create", "--zone", "europe-west4-a",
                       "--accelerator", "v5litepod-16")
    (argv,) = commands(lines)
    assert argv[argv.index("--zone") + 1] == "europe-west4-a"
    assert argv[argv.index("--accelerator-type") + 1] == "v5litepod-16"
    # the shipped example leaves project, zone and bucket empty: the launcher must refuse
    status = launch.main(["--dry-run", "--env", str(LAUNCH_DIR / "example.env"), "tpu", "create"])
    assert status == 2 and "is not set" in capsys.readouterr().err
    bad = tmp_path / "bad.env"
    bad.write_text("PROJCT=x\n")
    assert launch.main(["--dry-run", "--env", str(bad), "tpu", "create"]) == 2
    assert "unknown setting PROJCT" in capsys.readouterr().err


def test_dry_run_runs_nothing(env_file, tmp_path):
    """No gcloud on PATH: a dry run must still succeed, a real run must not reach it."""
    env = {**os.environ, "PATH": str(tmp_path)}
    result = subprocess.run([sys.executable, str(LAUNCH_DIR / "launch.py"), "--env", env_file, "tpu",
                             "create", "--dry-run"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("gcloud compute tpus tpu-vm create")


# --------------------------------------------------------------------------------- SLURM


def slurm_dry_run(capsys, env_file, tmp_path, *extra):
    script_path = tmp_path / "job.sbatch"
    status = launch.main(["--dry-run", "--env", env_file, "slurm", "--script", str(script_path),
                          "--log-dir", str(tmp_path / "logs"), "--repo-dir", "/shared/my repo",
                          "--slurm-partition", "a100", *extra, "--", OVERRIDE])
    out = capsys.readouterr().out
    assert status == 0
    head, rest = out.split("\n", 1)
    assert shlex.split(head.split("<<")[0]) == ["cat", ">", str(script_path)]
    script, after = rest.split("\nEOF\n", 1)
    assert not script_path.exists()  # dry run: nothing written
    return script + "\n", commands(after.splitlines())


def test_slurm_one_process_per_gpu(capsys, env_file, tmp_path):
    script, after = slurm_dry_run(capsys, env_file, tmp_path, "--slurm-nodes", "4")
    assert after == [["mkdir", "-p", str(tmp_path / "logs")], ["sbatch", str(tmp_path / "job.sbatch")]]
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    directives = [line for line in lines if line.startswith("#SBATCH")]
    assert directives == ["#SBATCH --job-name=bt-pretrain-base", "#SBATCH --nodes=4",
                          "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                          f"#SBATCH --output={tmp_path / 'logs'}/%x-%j.out", "#SBATCH --partition=a100"]
    assert "cd '/shared/my repo'" in lines and "export BT_PROCESS_PER=gpu" in lines
    assert "export NOTE='a b'" in lines
    srun = shlex.split(lines[-1])
    assert srun == ["srun", "--kill-on-bad-exit=1", "bash", "launch/slurm_task.sh", "python3",
                    *TRAIN_ARGS, OVERRIDE]


def test_slurm_one_process_per_node(capsys, env_file, tmp_path):
    script, _ = slurm_dry_run(capsys, env_file, tmp_path, "--slurm-process-per", "node",
                              "--slurm-gpus-per-node", "4", "--python", "/opt/venv/bin/python")
    assert "#SBATCH --ntasks-per-node=1" in script and "#SBATCH --gpus-per-node=4" in script
    assert "export BT_PROCESS_PER=node" in script
    assert shlex.split(script.splitlines()[-1])[4] == "/opt/venv/bin/python"


def test_slurm_rejects_sbatch_values_with_spaces(capsys, env_file, tmp_path):
    status = launch.main(["--dry-run", "--env", env_file, "slurm", "--slurm-partition", "a b"])
    assert status == 2 and "one word" in capsys.readouterr().err


# ------------------------------------------------------------------------ shell scripts


@pytest.fixture(scope="session")
def shellcheck():
    """shellcheck, installed with apt-get when missing (root needed); skip only if that fails."""
    if shutil.which("shellcheck") is None and shutil.which("apt-get") is not None:
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "shellcheck"]):
            subprocess.run(sudo + argv, capture_output=True, timeout=600,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    path = shutil.which("shellcheck")
    if path is None:
        pytest.skip("shellcheck is not installed and `apt-get install -y shellcheck` failed")
    return path


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_are_shellcheck_clean(shellcheck, script):
    result = subprocess.run([shellcheck, str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("per", ["gpu", "node"])
def test_generated_sbatch_script_is_shellcheck_clean(shellcheck, env_file, tmp_path, per, capsys):
    script_path = tmp_path / "job.sbatch"
    assert launch.main(["--env", env_file, "slurm", "--no-submit", "--script", str(script_path),
                        "--log-dir", str(tmp_path / "logs"), "--slurm-process-per", per, "--", OVERRIDE]) == 0
    result = subprocess.run([shellcheck, str(script_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


JAX_ENV_PROBE = ("import json, os; print(json.dumps({k: os.environ.get(k) for k in "
                 "('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID', 'SLURM_LOCALID')}))")


@pytest.mark.parametrize("per", ["gpu", "node"])
def test_slurm_task_hands_jax_the_layout(per):
    env = {**os.environ, "BT_PROCESS_PER": per, "BT_COORDINATOR_HOST": "node017", "BT_COORDINATOR_PORT": "23456",
           "SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1"}
    for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(key, None)
    result = subprocess.run(["bash", str(LAUNCH_DIR / "slurm_task.sh"), sys.executable, "-c", JAX_ENV_PROBE],
                            env=env, capture_output=True, text=True, check=True)
    seen = json.loads(result.stdout)
    if per == "node":  # explicit layout, and no SLURM_LOCALID to pin the process to one GPU
        assert seen == {"JAX_COORDINATOR_ADDRESS": "node017:23456", "JAX_NUM_PROCESSES": "4",
                        "JAX_PROCESS_ID": "3", "SLURM_LOCALID": None}
    else:  # jax.distributed.initialize() reads the SLURM environment itself
        assert seen == {"JAX_COORDINATOR_ADDRESS": None, "JAX_NUM_PROCESSES": None,
                        "JAX_PROCESS_ID": None, "SLURM_LOCALID": "1"}


def test_tpu_worker_setup_installs_the_tpu_jax_and_gcsfs(tmp_path):
    """`tpu_worker.sh setup` with a stand-in venv python that records what pip is asked to install."""
    venv, seen = tmp_path / "venv", tmp_path / "requirements_seen.txt"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "python"
    fake.write_text('#!/usr/bin/env bash\nargs=("$@")\necho "=== call" >> "$SEEN"\nfor i in "${!args[@]}"; do\n'
                    '  if [[ ${args[$i]} == -r ]]; then cat "${args[$((i + 1))]}" >> "$SEEN"; fi\ndone\n')
    fake.chmod(0o755)
    env = {**os.environ, "BT_VENV": str(venv), "BT_PYTHON": sys.executable, "SEEN": str(seen)}
    subprocess.run(["bash", str(LAUNCH_DIR / "tpu_worker.sh"), "setup"], env=env, cwd=REPO, check=True,
                   capture_output=True, text=True, timeout=60)
    jax_pin = next(line for line in (REPO / "requirements.txt").read_text().splitlines() if line.startswith("jax=="))
    calls = [[line for line in call.splitlines() if line and not line.startswith("#")]
             for call in seen.read_text().split("=== call\n")]
    installs = [call for call in calls if any(line.startswith("jax") for line in call)]
    # One pip call resolves both files: the TPU jax and gcsfs (the workdir is on gs://).
    assert len(installs) == 1, calls
    assert jax_pin.replace("jax==", "jax[tpu]==") in installs[0] and jax_pin not in installs[0]
    assert any(line.startswith("gcsfs==") for line in installs[0])


def test_tpu_worker_runs_detached_logs_and_stops(tmp_path):
    """launch/tpu_worker.sh as the TPU workers run it, with this python standing in for the venv."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    env = {**os.environ, "BT_VENV": str(venv), "BT_LOG_DIR": str(tmp_path / "logs")}

    def worker(*words, check=True):
        return subprocess.run(["bash", str(LAUNCH_DIR / "tpu_worker.sh"), *words], env=env, cwd=REPO,
                              capture_output=True, text=True, check=check, timeout=90)

    worker("run", "r1", "-c", "import sys, time; print('argv:', sys.argv[1:], flush=True); time.sleep(120)", "a 'b'")
    second = worker("run", "r1", "-c", "pass", check=False)
    assert second.returncode == 1 and "still going" in second.stderr
    log = tmp_path / "logs" / "r1.log"
    for _ in range(100):
        if "argv: [" in log.read_text():
            break
        time.sleep(0.1)
    host = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    assert f"[{host}] argv: [\"a 'b'\"]" in worker("logs", "--lines", "5", "r1").stdout
    pid = int((tmp_path / "logs" / "current.pid").read_text())
    assert "stopped" in worker("stop").stdout
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert "nothing running" in worker("stop").stdout


# -------------------------------------------------------------------- multinode / local


def test_multinode_prints_one_command_per_node(capsys, env_file):
    status = launch.main(["--env", env_file, "multinode", "--coordinator", "10.1.2.3:4567",
                          "--num-processes", "3", "--workdir", "/shared/w", "--", OVERRIDE])
    assert status == 0
    nodes = commands(capsys.readouterr().out.splitlines())
    assert len(nodes) == 3
    for i, argv in enumerate(nodes):
        assert argv[:3] == ["env", "TF_CPP_MIN_LOG_LEVEL=2", "NOTE=a b"]
        assert argv[-7:] == [OVERRIDE, "--coordinator_address", "10.1.2.3:4567", "--num_processes", "3",
                             "--process_id", str(i)]


def test_local_dry_run_gives_each_process_its_id(capsys):
    status, lines = dry_run(capsys, "local", "-n", "2", "--devices-per-process", "4", "--port", "23456",
                            "--config", "configs/pretrain.py:tiny", "--workdir", "/tmp/w w", "--",
                            "--config.total_steps=2")
    assert status == 0
    procs = commands(lines)
    assert len(procs) == 2
    for i, argv in enumerate(procs):
        env = dict(word.split("=", 1) for word in argv[1:3])
        assert env["JAX_PLATFORMS"] == "cpu"
        assert env["XLA_FLAGS"].split()[-1] == "--xla_force_host_platform_device_count=4"
        assert argv[3:] == [sys.executable, "-m", "bridgetower_jax.train", "--config", "configs/pretrain.py:tiny",
                            "--workdir", "/tmp/w w", "--config.total_steps=2", "--coordinator_address",
                            "127.0.0.1:23456", "--num_processes", "2", "--process_id", str(i)]


def test_local_runner_fails_fast_and_prefixes_output(capsys, tmp_path):
    processes = [launch.Process("p0", [sys.executable, "-c", "import time; print('zero'); time.sleep(120)"]),
                 launch.Process("p1", [sys.executable, "-c", "import sys, time; time.sleep(0.5); print('one');"
                                                             " sys.exit(3)"])]
    start = time.monotonic()
    status = launch.run_processes(processes, launch.Runner(dry_run=False), log_dir=str(tmp_path), grace_s=5)
    assert status == 1 and time.monotonic() - start < 30  # p0 was stopped, not waited for
    out = capsys.readouterr()
    assert "[p0] zero" in out.out and "[p1] one" in out.out
    assert "'p1': 3" in out.err
    assert (tmp_path / "p1.log").read_text() == "one\n"


def test_local_runner_exits_75_when_every_process_was_preempted(capsys):
    """A preempted process exits 75 once its part of the common checkpoint is written; the others get
    time to finish theirs (they are not stopped), and the launcher passes 75 on: rerun the same command."""
    from bridgetower_jax import preemption
    assert launch.EXIT_PREEMPTED == preemption.EXIT_PREEMPTED
    processes = [launch.Process("p0", [sys.executable, "-c", "import sys; sys.exit(75)"]),
                 launch.Process("p1", [sys.executable, "-c", "import sys, time; time.sleep(1.5); print('saved');"
                                                             " sys.exit(75)"])]
    status = launch.run_processes(processes, launch.Runner(dry_run=False), grace_s=5)
    out = capsys.readouterr()
    assert status == launch.EXIT_PREEMPTED, out.err
    assert "[p1] saved" in out.out and "rerun the same command to resume" in out.err


def test_local_runner_passes_sigterm_on_and_waits_for_the_checkpoint(capsys):
    """SIGTERM to the launcher (a preempted host): every process gets it, checkpoints, exits 75."""
    trainer = ("import signal, sys, time\n"
               "def preempted(*_):\n    time.sleep(0.5); print('checkpoint written', flush=True); sys.exit(75)\n"
               "signal.signal(signal.SIGTERM, preempted)\ntime.sleep(60)\n")
    processes = [launch.Process(f"p{i}", [sys.executable, "-c", trainer]) for i in range(2)]
    before = signal.getsignal(signal.SIGTERM)
    threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    start = time.monotonic()
    status = launch.run_processes(processes, launch.Runner(dry_run=False), grace_s=5)
    out = capsys.readouterr()
    assert status == launch.EXIT_PREEMPTED and time.monotonic() - start < 30, out.err
    assert "[p0] checkpoint written" in out.out and "[p1] checkpoint written" in out.out
    assert "SIGTERM: passed on to the processes" in out.err
    assert signal.getsignal(signal.SIGTERM) is before


def test_local_runner_fails_fast_when_a_process_crashes_after_a_preemption(capsys):
    processes = [launch.Process("p0", [sys.executable, "-c", "import sys; sys.exit(75)"]),
                 launch.Process("p1", [sys.executable, "-c", "import sys, time; time.sleep(0.5); sys.exit(3)"]),
                 launch.Process("p2", [sys.executable, "-c", "import time; time.sleep(120)"])]
    start = time.monotonic()
    status = launch.run_processes(processes, launch.Runner(dry_run=False), grace_s=2)
    assert status == 1 and time.monotonic() - start < 30     # not the 300 s a preemption would get
    assert "'p1': 3" in capsys.readouterr().err


def test_local_runner_stops_a_process_that_outlives_a_preemption(capsys):
    processes = [launch.Process("p0", [sys.executable, "-c", "import sys; sys.exit(75)"]),
                 launch.Process("p1", [sys.executable, "-c", "import time; time.sleep(120)"])]
    start = time.monotonic()
    status = launch.run_processes(processes, launch.Runner(dry_run=False), grace_s=2, preempted_wait_s=1)
    assert status == 1 and time.monotonic() - start < 30
    assert "still running 1 s after one was preempted" in capsys.readouterr().err


STAND_IN_TRAINER = """
import argparse, json, os, sys
import jax, jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

parser = argparse.ArgumentParser()
for flag in ("--config", "--workdir", "--coordinator_address"):
    parser.add_argument(flag)
parser.add_argument("--num_processes", type=int)
parser.add_argument("--process_id", type=int)
args, overrides = parser.parse_known_args()
jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
total = multihost_utils.process_allgather(jnp.asarray(jax.process_index() + 1))
# One write: print() with several arguments writes them one by one, and another thread's log line
# (Gloo's, on the same pipe) can land between them.
print(f"process {jax.process_index()} of {jax.process_count()}: devices {jax.device_count()} local "
      f"{jax.local_device_count()} sum {int(np.sum(total))}\\n", end="", flush=True)
if jax.process_index() == 0:
    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": 1, "devices": jax.device_count(), "overrides": overrides}) + "\\n")
"""


def test_local_launcher_runs_a_two_process_jax_job(tmp_path):
    """The launcher's multi-process wiring with a stand-in trainer (the real one is tested below)."""
    package = tmp_path / "bridgetower_jax"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "train.py").write_text(STAND_IN_TRAINER)
    workdir = tmp_path / "work dir"
    result = subprocess.run(
        [sys.executable, str(LAUNCH_DIR / "launch.py"), "local", "-n", "2", "--devices-per-process", "4",
         "--timeout", "300", "--config", "configs/pretrain.py:tiny", "--workdir", str(workdir), "--",
         OVERRIDE], cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # XLA's own logging writes to the same pipe from other threads and may split a line, so
    # look for the message itself; the [label] prefixes are checked in the runner test above.
    for i in range(2):
        assert f"process {i} of 2: devices 8 local 4 sum 3" in result.stdout, result.stdout
        assert f"[process{i}] " in result.stdout
    (record,) = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert record == {"step": 1, "devices": 8, "overrides": [OVERRIDE]}
