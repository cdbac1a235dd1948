#!/usr/bin/env python3
"""Launch bridgetower_jax training on Cloud TPU VMs, SLURM GPU clusters, plain hosts or locally.

Every path runs the same command on every host (one process per host, or per GPU on SLURM):

    python -m bridgetower_jax.train --config CONFIG --workdir WORKDIR [--config.key=value ...]

and the trainer calls `jax.distributed.initialize` (no arguments on TPU pods and SLURM, an
explicit coordinator for `multinode` and `local`). Settings come from an env file
(`--env FILE`, see launch/example.env), overridden by flags. `--dry-run` prints every
command, shell-quoted, and runs nothing. Training flags after `--` are passed through:

    launch/launch.py --env my.env tpu run --config configs/pretrain.py:base -- --config.total_steps=1000

Only the standard library is used, so this runs from any machine that has gcloud or sbatch.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER_SCRIPT = "launch/tpu_worker.sh"  # relative to the code directory on every TPU worker
SLURM_TASK_SCRIPT = "launch/slurm_task.sh"
REMOTE_TARBALL = "bt_code.tar.gz"  # in the worker's home directory, removed after unpacking
REMOTE_LOG_DIR = "bt_logs"  # per-worker logs, relative to the worker's home (tpu_worker.sh's BT_LOG_DIR)
# The trainer's exit code after a preemption checkpoint (bridgetower_jax.preemption.EXIT_PREEMPTED;
# repeated here because this file uses the standard library only).
EXIT_PREEMPTED = 75

# Every setting the env file may hold: name -> default (None: no default, must be given).
# The flag for NAME is --name-with-dashes; a flag beats the env file, the env file beats the default.
SETTINGS: dict[str, str | None] = {
    # Cloud TPU
    "PROJECT": None,
    "ZONE": None,
    "TPU_NAME": None,
    "ACCELERATOR": None,
    "RUNTIME_VERSION": None,
    "SPOT": "0",
    "QUEUED": "0",  # create through queued resources (always on when NUM_SLICES > 1)
    "QR_ID": None,  # queued-resource id, defaults to TPU_NAME
    "NUM_SLICES": "1",
    "INTERNAL_IP": "0",  # ssh/scp over the internal IP (launching from a VM in the same VPC)
    "REMOTE_DIR": "bridgetower_jax",  # code directory on every worker, relative to its home
    "REPO_URL": None,  # setup clones this instead of copying the local checkout
    "REPO_REF": "main",
    # what to train
    "BUCKET": None,  # gs://bucket[/prefix]; the default workdir is BUCKET/bridgetower/RUN_NAME
    "WORKDIR": None,
    "RUN_NAME": None,  # defaults to the config file and variant, e.g. pretrain-base
    "CONFIG": None,
    "DATA_DIR": None,
    "TOKENIZER_DIR": None,
    "TRAIN_ENV": "",  # extra environment for the trainer, shell words: "K=V K2='a b'"
    # SLURM / plain multi-node
    "REPO_DIR": None,  # checkout on the cluster's shared filesystem, defaults to this checkout
    "PYTHON": None,  # python on the cluster / nodes, defaults to python3 (local: this python)
    "SLURM_NODES": "1",
    "SLURM_GPUS_PER_NODE": "8",
    "SLURM_PROCESS_PER": "gpu",  # gpu: one process per GPU; node: one process per node
    "SLURM_PARTITION": None,
    "SLURM_ACCOUNT": None,
    "SLURM_TIME": None,
    "SLURM_CPUS_PER_TASK": None,
}


class LaunchError(Exception):
    """A user error: printed as one line, exit status 2."""


# ---------------------------------------------------------------------------------------------
# Settings: env file < flags
# ---------------------------------------------------------------------------------------------

def read_env_file(path: str) -> dict[str, str]:
    """Parses KEY=VALUE lines with shell quoting and # comments (the file is also `source`able)."""
    values = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] == "export":
            words = words[1:]
        if len(words) != 1 or "=" not in words[0]:
            raise LaunchError(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        key, value = words[0].split("=", 1)
        if key not in SETTINGS:
            raise LaunchError(f"{path}:{number}: unknown setting {key} (known: {', '.join(SETTINGS)})")
        values[key] = value
    return values


@dataclass
class Settings:
    flags: argparse.Namespace
    env_file: dict[str, str]

    def get(self, key: str) -> str | None:
        flag = getattr(self.flags, key.lower(), None)
        if flag is not None:
            return str(int(flag)) if isinstance(flag, bool) else str(flag)
        if self.env_file.get(key, "") != "":
            return self.env_file[key]
        return SETTINGS[key]

    def need(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise LaunchError(f"{key} is not set: put {key}=... in the env file (--env) or pass "
                              f"--{key.lower().replace('_', '-')}")
        return value

    def flag(self, key: str) -> bool:
        return (self.get(key) or "0").lower() in ("1", "true", "yes", "on")

    def integer(self, key: str) -> int:
        try:
            return int(self.need(key))
        except ValueError:
            raise LaunchError(f"{key} must be an integer, got {self.get(key)!r}") from None


def add_setting_flags(parser: argparse.ArgumentParser, *keys: str) -> None:
    for key in keys:
        name = "--" + key.lower().replace("_", "-")
        if key in ("SPOT", "QUEUED", "INTERNAL_IP"):
            parser.add_argument(name, dest=key.lower(), action=argparse.BooleanOptionalAction,
                                default=None, help=f"overrides {key}")
        else:
            parser.add_argument(name, dest=key.lower(), default=None, metavar=key,
                                help=f"overrides {key}" + (f" (default {SETTINGS[key]})" if SETTINGS[key] else ""))


# ---------------------------------------------------------------------------------------------
# The training command, shared by every launcher
# ---------------------------------------------------------------------------------------------

def default_run_name(config: str) -> str:
    """configs/pretrain.py:base -> pretrain-base: stable, so rerunning resumes the same workdir."""
    path, _, variant = config.partition(":")
    name = Path(path).stem + (f"-{variant}" if variant else "")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def workdir_of(settings: Settings) -> str:
    workdir = settings.get("WORKDIR")
    if workdir:
        return workdir
    bucket = settings.get("BUCKET")
    if not bucket:
        raise LaunchError("set WORKDIR, or BUCKET (the workdir is then BUCKET/bridgetower/RUN_NAME)")
    return f"{bucket.rstrip('/')}/bridgetower/{run_name_of(settings)}"


def run_name_of(settings: Settings) -> str:
    return settings.get("RUN_NAME") or default_run_name(settings.need("CONFIG"))


def train_args(settings: Settings, entry: str, overrides: list[str]) -> list[str]:
    """`-m bridgetower_jax.<entry> ...` without the python executable."""
    args = ["-m", f"bridgetower_jax.{entry}", "--config", settings.need("CONFIG"),
            "--workdir", workdir_of(settings)]
    for key, override in (("DATA_DIR", "data.data_dir"), ("TOKENIZER_DIR", "data.tokenizer_dir")):
        if settings.get(key):
            args.append(f"--config.{override}={settings.get(key)}")
    num_slices = settings.integer("NUM_SLICES")
    if num_slices > 1:
        args.append(f"--config.mesh.num_slices={num_slices}")
    return args + overrides


def train_env(settings: Settings) -> dict[str, str]:
    env = {}
    for word in shlex.split(settings.get("TRAIN_ENV") or ""):
        key, eq, value = word.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise LaunchError(f"TRAIN_ENV: expected KEY=VALUE words, got {word!r}")
        env[key] = value
    return env


def env_words(env: dict[str, str]) -> list[str]:
    return ["env", *(f"{k}={v}" for k, v in env.items())] if env else []


# ---------------------------------------------------------------------------------------------
# Running commands (or printing them with --dry-run)
# ---------------------------------------------------------------------------------------------

@dataclass
class Runner:
    dry_run: bool

    def show(self, text: str) -> None:
        print(text if self.dry_run else f"+ {text}", file=sys.stdout if self.dry_run else sys.stderr,
              flush=True)

    def run(self, argv: list[str], check: bool = True) -> int:
        self.show(shlex.join(argv))
        if self.dry_run:
            return 0
        status = subprocess.call(argv)
        if check and status != 0:
            raise LaunchError(f"command failed with exit status {status}: {shlex.join(argv)}")
        return status

    def note(self, text: str) -> None:
        """A step that is not a command (packing files); shown as a shell comment."""
        self.show(f"# {text}")


@dataclass
class Process:
    label: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # added to this process's environment


def process_line(process: Process) -> str:
    return shlex.join(env_words(process.env) + process.argv)


def run_processes(processes: list[Process], runner: Runner, timeout: float | None = None,
                  log_dir: str | None = None, grace_s: float = 10.0, preempted_wait_s: float = 300.0) -> int:
    """Starts all processes, prefixes their output with [label], waits for all of them.

    Returns 0 when every process exits 0, and EXIT_PREEMPTED (75) when they all stopped for a
    preemption (each wrote its part of the same checkpoint: rerun the same command). A process that
    exits 75 leaves the others preempted_wait_s to finish that checkpoint; a SIGTERM to the launcher
    is passed on to every process. When one fails (or the timeout passes) the others are terminated,
    because the survivors would otherwise wait forever in a collective; the return value is then 1.
    """
    for process in processes:
        runner.show(process_line(process))
    if runner.dry_run:
        return 0
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
    children = []
    lock = threading.Lock()

    def pump(process: Process, child: subprocess.Popen) -> None:
        log = open(os.path.join(log_dir, f"{process.label}.log"), "w") if log_dir else None
        for line in child.stdout:
            with lock:
                sys.stdout.write(f"[{process.label}] {line}")
                sys.stdout.flush()
            if log:
                log.write(line)
                log.flush()
        if log:
            log.close()

    threads = []
    for process in processes:
        child = subprocess.Popen(process.argv, env={**os.environ, **process.env},
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 errors="replace", start_new_session=True)
        children.append(child)
        thread = threading.Thread(target=pump, args=(process, child), daemon=True)
        thread.start()
        threads.append(thread)

    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        # A preemption notice sent to the launcher (the children run in their own sessions and do not
        # get it): pass it on, and go on waiting while they write their checkpoint and exit 75.
        def pass_sigterm_on(signum, frame):
            del signum, frame
            print("launch: SIGTERM: passed on to the processes; waiting for their checkpoint", file=sys.stderr)
            for child in children:
                if child.poll() is None:
                    try:
                        os.killpg(child.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
        previous_handler = signal.signal(signal.SIGTERM, pass_sigterm_on)

    deadline = None if timeout is None else time.monotonic() + timeout
    failed, preempted_since = None, None
    try:
        while any(child.poll() is None for child in children):
            codes = [c.poll() for c in children]
            failed = next((p.label for p, code in zip(processes, codes) if code not in (None, 0, EXIT_PREEMPTED)),
                          None)
            if failed is not None:
                break
            if EXIT_PREEMPTED in codes and preempted_since is None:
                preempted_since = time.monotonic()
            if preempted_since is not None and time.monotonic() - preempted_since > preempted_wait_s:
                failed = "preemption"
                break
            if deadline is not None and time.monotonic() > deadline:
                failed = "timeout"
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        failed = "interrupt"
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    if failed is not None:
        stop_processes(children, grace_s)
    for thread in threads:
        thread.join(timeout=5)
    statuses = {p.label: c.wait() for p, c in zip(processes, children)}
    if failed is None and EXIT_PREEMPTED in statuses.values() and set(statuses.values()) <= {0, EXIT_PREEMPTED}:
        print(f"launch: preempted: every process stopped after writing its checkpoint (exit statuses "
              f"{statuses}); rerun the same command to resume (exit code {EXIT_PREEMPTED})", file=sys.stderr)
        return EXIT_PREEMPTED
    bad = {label: status for label, status in statuses.items() if status != 0}
    if bad or failed == "timeout":
        reason = ""
        if failed == "timeout":
            reason = f"timed out after {timeout:g} s; "
        elif failed == "preemption":
            reason = f"stopped the processes still running {preempted_wait_s:g} s after one was preempted; "
        print(f"launch: {reason}exit statuses {statuses}", file=sys.stderr)
        return 1
    return 0


def stop_processes(children: list[subprocess.Popen], grace_s: float) -> None:
    """SIGTERM to each still-running child's process group, SIGKILL after grace_s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [c for c in children if c.poll() is None]
        for child in alive:
            try:
                os.killpg(child.pid, sig)
            except ProcessLookupError:
                pass
        end = time.monotonic() + grace_s
        while any(c.poll() is None for c in alive) and time.monotonic() < end:
            time.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# Cloud TPU VMs
# ---------------------------------------------------------------------------------------------

@dataclass
class TpuTarget:
    """Where gcloud ssh/scp go: one TPU VM (all its workers) or every node of a queued resource."""
    settings: Settings

    @property
    def multislice(self) -> bool:
        return self.settings.integer("NUM_SLICES") > 1

    @property
    def name(self) -> str:
        return self.settings.need("TPU_NAME")

    @property
    def qr_id(self) -> str:
        return self.settings.get("QR_ID") or self.name

    def location(self) -> list[str]:
        return ["--zone", self.settings.need("ZONE"), "--project", self.settings.need("PROJECT")]

    def _group(self) -> list[str]:
        return ["gcloud", "compute", "tpus"] + (["queued-resources"] if self.multislice else ["tpu-vm"])

    def _resource(self) -> str:
        return self.qr_id if self.multislice else self.name

    def _select(self, worker: str, node: str = "all") -> list[str]:
        selected = [f"--worker={worker}"] + ([f"--node={node}"] if self.multislice else [])
        return selected + (["--internal-ip"] if self.settings.flag("INTERNAL_IP") else [])

    def ssh(self, command: str, worker: str = "all", node: str = "all") -> list[str]:
        return (self._group() + ["ssh", self._resource()] + self.location()
                + self._select(worker, node) + ["--command", command])

    def scp_to(self, local: str, remote: str) -> list[str]:
        return (self._group() + ["scp", local, f"{self._resource()}:{remote}"] + self.location()
                + self._select("all"))

    def scp_from(self, remote: str, local: str, worker: str, node: str) -> list[str]:
        return (self._group() + ["scp", f"{self._resource()}:{remote}", local] + self.location()
                + self._select(worker, node))


def worker_command(settings: Settings, *words: str, env: dict[str, str] | None = None) -> str:
    """Shell command for every worker: cd into the code and call launch/tpu_worker.sh."""
    call = env_words(env or {}) + ["bash", WORKER_SCRIPT, *words]
    return f"cd {shlex.quote(settings.need('REMOTE_DIR'))} && {shlex.join(call)}"


def tpu_create(settings: Settings, runner: Runner, args) -> None:
    target = TpuTarget(settings)
    spot = ["--spot"] if settings.flag("SPOT") else []
    accelerator = ["--accelerator-type", settings.need("ACCELERATOR")]
    if target.multislice or settings.flag("QUEUED"):
        nodes = (["--node-count", str(settings.integer("NUM_SLICES")), "--node-prefix", target.name]
                 if target.multislice else ["--node-id", target.name])
        runner.run(["gcloud", "compute", "tpus", "queued-resources", "create", target.qr_id]
                   + target.location() + accelerator
                   + ["--runtime-version", settings.need("RUNTIME_VERSION")] + nodes + spot)
        runner.note(f"queued: wait until `gcloud compute tpus queued-resources describe {target.qr_id} "
                    f"{shlex.join(target.location())}` shows state ACTIVE, then run setup")
    else:
        runner.run(["gcloud", "compute", "tpus", "tpu-vm", "create", target.name] + target.location()
                   + accelerator + ["--version", settings.need("RUNTIME_VERSION")] + spot)


def code_files(repo: Path) -> list[str]:
    """Tracked and untracked-but-not-ignored files (no .git, no venv, no build output)."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise LaunchError(f"cannot list the files of {repo} with git ({error}); set REPO_URL "
                          "to clone on the workers instead") from None
    return sorted(name for name in out.decode().split("\0") if name and (repo / name).is_file())


def pack_code(repo: Path, out: str) -> int:
    files = code_files(repo)
    with tarfile.open(out, "w:gz") as tar:
        for name in files:
            tar.add(repo / name, arcname=name)
    return len(files)


def tpu_setup(settings: Settings, runner: Runner, args) -> None:
    target = TpuTarget(settings)
    code_dir = shlex.quote(settings.need("REMOTE_DIR"))
    repo_url = settings.get("REPO_URL")
    if repo_url:
        fetch = (f"rm -rf {code_dir} && git clone --quiet {shlex.quote(repo_url)} {code_dir} && "
                 f"git -C {code_dir} checkout --quiet {shlex.quote(settings.need('REPO_REF'))}")
        runner.run(target.ssh(fetch))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            tarball = os.path.join(tmp, REMOTE_TARBALL)
            runner.note(f"pack the files git lists in {REPO_ROOT} (tracked + untracked, not ignored) "
                        f"into {tarball}")
            if not runner.dry_run:
                count = pack_code(REPO_ROOT, tarball)
                print(f"packed {count} files", file=sys.stderr)
            runner.run(target.scp_to(tarball, REMOTE_TARBALL))
        runner.run(target.ssh(f"rm -rf {code_dir} && mkdir -p {code_dir} && "
                              f"tar -xzf {REMOTE_TARBALL} -C {code_dir} && rm {REMOTE_TARBALL}"))
    runner.run(target.ssh(worker_command(settings, "setup")))


def tpu_run(settings: Settings, runner: Runner, args) -> None:
    target = TpuTarget(settings)
    workdir = workdir_of(settings)
    if not workdir.startswith("gs://"):
        raise LaunchError(f"the workdir must be on gs:// so that every worker and every restart "
                          f"sees the same checkpoints, got {workdir!r}")
    command = train_args(settings, args.entry, args.overrides)
    run_name = run_name_of(settings)
    runner.run(target.ssh(worker_command(settings, "run", run_name, *command, env=train_env(settings))))
    if args.follow:
        runner.note("training runs detached on every worker; Ctrl-C stops following, not training")
        runner.run(target.ssh(worker_command(settings, "logs", "--follow", run_name), worker="0", node="0"),
                   check=False)


def tpu_logs(settings: Settings, runner: Runner, args) -> None:
    target = TpuTarget(settings)
    name = args.run_name_arg or run_name_of(settings)
    if args.fetch:
        if not args.num_workers:
            raise LaunchError("--fetch needs --num-workers (hosts per slice)")
        runner.run(["mkdir", "-p", args.fetch])
        remote = f"{REMOTE_LOG_DIR}/{name}.log"
        for node in range(settings.integer("NUM_SLICES")) if target.multislice else [None]:
            for worker in range(args.num_workers):
                stem = f"worker-{worker}" if node is None else f"node-{node}-worker-{worker}"
                runner.run(target.scp_from(remote, os.path.join(args.fetch, f"{stem}.log"),
                                           str(worker), str(node or 0)))
        return
    words = ["logs", "--lines", str(args.lines)] + (["--follow"] if args.follow else []) + [name]
    runner.run(target.ssh(worker_command(settings, *words), worker=args.worker, node=args.node), check=False)


def tpu_stop(settings: Settings, runner: Runner, args) -> None:
    runner.run(TpuTarget(settings).ssh(worker_command(settings, "stop")))


def tpu_delete(settings: Settings, runner: Runner, args) -> None:
    target = TpuTarget(settings)
    if target.multislice or settings.flag("QUEUED"):
        runner.run(["gcloud", "compute", "tpus", "queued-resources", "delete", target.qr_id]
                   + target.location() + ["--force", "--quiet"])
    else:
        runner.run(["gcloud", "compute", "tpus", "tpu-vm", "delete", target.name]
                   + target.location() + ["--quiet"])


# ---------------------------------------------------------------------------------------------
# SLURM, plain multi-node, local
# ---------------------------------------------------------------------------------------------

def sbatch_value(key: str, value: str) -> str:
    if not value or re.search(r"\s", value):
        raise LaunchError(f"{key} goes into an #SBATCH line and must be one word, got {value!r}")
    return value


def slurm_script(settings: Settings, entry: str, overrides: list[str], log_dir: str) -> str:
    """The sbatch script: srun starts one task per GPU (or node) and each calls the trainer."""
    per = settings.need("SLURM_PROCESS_PER")
    if per not in ("gpu", "node"):
        raise LaunchError(f"SLURM_PROCESS_PER must be gpu or node, got {per!r}")
    gpus = settings.integer("SLURM_GPUS_PER_NODE")
    directives = {
        "job-name": f"bt-{run_name_of(settings)}",
        "nodes": str(settings.integer("SLURM_NODES")),
        "ntasks-per-node": str(gpus if per == "gpu" else 1),
        "gpus-per-node": str(gpus),
        "output": f"{log_dir.rstrip('/')}/%x-%j.out",
    }
    for key in ("SLURM_PARTITION", "SLURM_ACCOUNT", "SLURM_TIME", "SLURM_CPUS_PER_TASK"):
        if settings.get(key):
            directives[key[len("SLURM_"):].lower().replace("_", "-")] = settings.get(key)
    repo_dir = settings.get("REPO_DIR") or str(REPO_ROOT)
    python = settings.get("PYTHON") or "python3"
    task = ["srun", "--kill-on-bad-exit=1", "bash", SLURM_TASK_SCRIPT, python,
            *train_args(settings, entry, overrides)]
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH --{key}={sbatch_value(key, value)}" for key, value in directives.items()]
    lines += [
        "# Written by launch/launch.py slurm: change the launcher's settings, not this file.",
        "set -euo pipefail",
        f"cd {shlex.quote(repo_dir)}",
        f"export BT_PROCESS_PER={per}",
        "# per node: the coordinator is the first node of the job (launch/slurm_task.sh uses it);",
        "# per GPU: jax.distributed.initialize() reads the same facts from the SLURM environment.",
        'BT_COORDINATOR_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "export BT_COORDINATOR_HOST",
        "export BT_COORDINATOR_PORT=$((20000 + SLURM_JOB_ID % 20000))",
    ]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in train_env(settings).items()]
    lines.append(shlex.join(task))
    return "\n".join(lines) + "\n"


def cmd_slurm(settings: Settings, runner: Runner, args) -> None:
    log_dir = args.log_dir or os.path.join(settings.get("REPO_DIR") or str(REPO_ROOT), "slurm_logs")
    script = slurm_script(settings, args.entry, args.overrides, log_dir)
    path = args.script or os.path.join(tempfile.gettempdir(), f"bt-{run_name_of(settings)}.sbatch")
    # The script is shown as the heredoc that writes it, so the dry run stays runnable as-is.
    runner.show(f"cat > {shlex.quote(path)} <<'EOF'\n{script}EOF")
    runner.run(["mkdir", "-p", log_dir])
    if not runner.dry_run:
        Path(path).write_text(script)
    if args.submit:
        runner.run(["sbatch", path])


def cmd_multinode(settings: Settings, runner: Runner, args) -> int:
    python = settings.get("PYTHON") or "python3"
    command = train_args(settings, args.entry, args.overrides)
    env = train_env(settings)

    def argv(process_id: int) -> list[str]:
        return [python, *command, "--coordinator_address", args.coordinator,
                "--num_processes", str(args.num_processes), "--process_id", str(process_id)]

    if args.hosts:
        hosts = args.hosts.split(",")
        if len(hosts) != args.num_processes:
            raise LaunchError(f"--hosts names {len(hosts)} hosts for --num-processes {args.num_processes}")
        repo_dir = settings.get("REPO_DIR") or str(REPO_ROOT)
        processes = [Process(f"{i}:{host}", ["ssh", "-o", "BatchMode=yes", host,
                                              f"cd {shlex.quote(repo_dir)} && exec "
                                              + shlex.join(env_words(env) + argv(i))])
                     for i, host in enumerate(hosts)]
        return run_processes(processes, runner)
    if args.process_id is not None:
        return run_processes([Process(f"process{args.process_id}", argv(args.process_id), env)], runner)
    print("# run one command on each node (node 0 hosts the coordinator):")
    for i in range(args.num_processes):
        print(process_line(Process(str(i), argv(i), env)))
    return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cmd_local(settings: Settings, runner: Runner, args) -> int:
    python = settings.get("PYTHON") or sys.executable
    command = train_args(settings, args.entry, args.overrides)
    coordinator = f"127.0.0.1:{args.port or free_port()}"
    # Keep the caller's other XLA flags; only the simulated device count is ours.
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split()
            if not f.startswith("--xla_force_host_platform_device_count")]
    xla_flags = " ".join(kept + [f"--xla_force_host_platform_device_count={args.devices_per_process}"])
    processes = []
    for i in range(args.num_processes):
        env = {**train_env(settings), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags}
        processes.append(Process(f"process{i}", [python, *command, "--coordinator_address", coordinator,
                                                 "--num_processes", str(args.num_processes),
                                                 "--process_id", str(i)], env))
    return run_processes(processes, runner, timeout=args.timeout, log_dir=args.log_dir)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

TRAIN_KEYS = ("CONFIG", "WORKDIR", "BUCKET", "RUN_NAME", "DATA_DIR", "TOKENIZER_DIR", "TRAIN_ENV")
TPU_KEYS = ("PROJECT", "ZONE", "TPU_NAME", "NUM_SLICES", "QR_ID", "QUEUED", "INTERNAL_IP", "REMOTE_DIR")


def add_common_flags(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """--env and --dry-run, accepted before or after the subcommand."""
    default = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    parser.add_argument("--env", default=default(os.environ.get("BT_ENV_FILE")),
                        help="settings file of KEY=VALUE lines (default $BT_ENV_FILE); see launch/example.env")
    parser.add_argument("--dry-run", action="store_true", default=default(False),
                        help="print every command, run nothing")


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    add_setting_flags(parser, *TRAIN_KEYS)
    parser.add_argument("--entry", choices=("train", "evaluate"), default="train",
                        help="python -m bridgetower_jax.<entry> (default train)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launch/launch.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Arguments after a lone -- go to the trainer unchanged, e.g. -- --config.total_steps=10")
    add_common_flags(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True)

    tpu = commands.add_parser("tpu", help="Cloud TPU VMs: create, setup, run, logs, stop, delete")
    tpu_commands = tpu.add_subparsers(dest="tpu_command", required=True)
    create = tpu_commands.add_parser("create", help="create the TPU VM (or queued resource; multi-slice)")
    add_setting_flags(create, *TPU_KEYS, "ACCELERATOR", "RUNTIME_VERSION", "SPOT")
    setup = tpu_commands.add_parser(
        "setup", help="copy (or clone) the code to every worker and install requirements.txt with TPU jax")
    add_setting_flags(setup, *TPU_KEYS, "REPO_URL", "REPO_REF")
    run = tpu_commands.add_parser("run", help="start training on every worker (detached) and follow worker 0")
    add_setting_flags(run, *TPU_KEYS)
    add_train_flags(run)
    run.add_argument("--follow", action=argparse.BooleanOptionalAction, default=True,
                     help="stream worker 0's log after starting (default on)")
    logs = tpu_commands.add_parser("logs", help="show, follow or fetch the per-worker log files")
    add_setting_flags(logs, *TPU_KEYS, "CONFIG", "RUN_NAME")
    logs.add_argument("run_name_arg", nargs="?", metavar="RUN", help="run name (default: RUN_NAME)")
    logs.add_argument("--worker", default="all", help="worker index or all (default all)")
    logs.add_argument("--node", default="all", help="multi-slice: node (slice) index or all")
    logs.add_argument("--follow", action="store_true", help="keep printing new lines (tail -F)")
    logs.add_argument("--lines", type=int, default=100, help="lines to show per worker (default 100)")
    logs.add_argument("--fetch", metavar="DIR", help="copy every worker's log file into DIR")
    logs.add_argument("--num-workers", type=int, help="hosts per slice, for --fetch")
    stop = tpu_commands.add_parser("stop", help="stop the training processes on every worker")
    add_setting_flags(stop, *TPU_KEYS)
    delete = tpu_commands.add_parser("delete", help="delete the TPU VM or queued resource")
    add_setting_flags(delete, *TPU_KEYS)
    for sub, handler in ((create, tpu_create), (setup, tpu_setup), (run, tpu_run), (logs, tpu_logs),
                         (stop, tpu_stop), (delete, tpu_delete)):
        sub.set_defaults(handler=handler)
        add_common_flags(sub)

    slurm = commands.add_parser("slurm", help="write an sbatch script (one process per GPU or node) and submit it")
    add_train_flags(slurm)
    add_setting_flags(slurm, "REPO_DIR", "PYTHON", "NUM_SLICES", "SLURM_NODES", "SLURM_GPUS_PER_NODE",
                      "SLURM_PROCESS_PER", "SLURM_PARTITION", "SLURM_ACCOUNT", "SLURM_TIME",
                      "SLURM_CPUS_PER_TASK")
    slurm.add_argument("--script", help="where to write the sbatch script (default in the temp dir)")
    slurm.add_argument("--log-dir", help="directory for the job's output file (default REPO_DIR/slurm_logs)")
    slurm.add_argument("--submit", action=argparse.BooleanOptionalAction, default=True,
                       help="call sbatch after writing the script (default on)")
    slurm.set_defaults(handler=cmd_slurm)
    add_common_flags(slurm)

    multinode = commands.add_parser(
        "multinode", help="explicit coordinator: print each node's command, run one (--process-id), "
                          "or start all over ssh (--hosts)")
    add_train_flags(multinode)
    add_setting_flags(multinode, "REPO_DIR", "PYTHON", "NUM_SLICES")
    multinode.add_argument("--coordinator", required=True, metavar="HOST:PORT",
                           help="address of process 0, reachable from every node")
    multinode.add_argument("--num-processes", type=int, required=True)
    multinode.add_argument("--process-id", type=int, help="run this node's process here")
    multinode.add_argument("--hosts", help="comma-separated hosts, in process-id order: start all over ssh")
    multinode.set_defaults(handler=cmd_multinode)
    add_common_flags(multinode)

    local = commands.add_parser("local", help="N processes on 127.0.0.1 with simulated CPU devices")
    add_train_flags(local)
    add_setting_flags(local, "PYTHON", "NUM_SLICES")
    local.add_argument("-n", "--num-processes", type=int, default=2)
    local.add_argument("--devices-per-process", type=int, default=4)
    local.add_argument("--port", type=int, help="coordinator port (default: a free one)")
    local.add_argument("--timeout", type=float, help="seconds before all processes are stopped and it fails")
    local.add_argument("--log-dir", help="also write each process's output to DIR/processI.log")
    local.set_defaults(handler=cmd_local)
    add_common_flags(local)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = []
    if "--" in argv:
        cut = argv.index("--")
        argv, overrides = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    args.overrides = overrides
    try:
        settings = Settings(args, read_env_file(args.env) if args.env else {})
        status = args.handler(settings, Runner(args.dry_run), args)
    except LaunchError as error:
        print(f"launch: error: {error}", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
