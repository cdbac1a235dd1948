"""Test-only fault injection, switched on by the environment variable BRIDGETOWER_FAULTS.

    BRIDGETOWER_FAULTS="sigkill_after_step@3,sigkill_in_save@4,sigterm_after_step@5,nan_batch@6"

    sigkill_after_step@N  SIGKILL this process once step N has been dispatched and logged and the
                          checkpoint writes already started have committed, before step N's own
                          checkpoint (if N is a checkpoint step) is started
    sigkill_in_save@N     SIGKILL this process while the checkpoint of step N is being written:
                          after Orbax has started the write, before it commits it
    sigterm_after_step@N  send this process a real SIGTERM at the same point (what a preempted VM
                          gets); one process stops after step N, a multi-host run at the step
                          its processes agree on
    nan_batch@N           make step N's batch NaN (every float array): a poisoned input
    bad_images_below@N    every stored image with index < N (in any split) fails to decode

Each fault fires in the process whose environment names it; `KIND@N:P` fires it only in the process
whose `jax.process_index()` is P (a launcher gives every process the same environment: one host of a
pod preempted). With the variable unset every hook is a dictionary lookup. The reliability tests
(tests/test_reliability.py) drive the trainer through these faults in subprocesses.
"""
from __future__ import annotations

import functools
import glob
import os
import re
import signal
import time
from typing import Callable

import numpy as np

ENV = "BRIDGETOWER_FAULTS"
KINDS = ("sigkill_after_step", "sigkill_in_save", "sigterm_after_step", "nan_batch", "bad_images_below")


@functools.lru_cache(maxsize=None)
def _planned() -> frozenset:
    """{(kind, step, process index or None)} from BRIDGETOWER_FAULTS (read once per process)."""
    planned = set()
    for item in filter(None, (s.strip() for s in os.environ.get(ENV, "").split(","))):
        m = re.fullmatch(r"([a-z_]+)@(\d+)(?::(\d+))?", item, re.ASCII)
        if not m or m.group(1) not in KINDS:
            raise ValueError(f"{ENV}: cannot parse {item!r}; expected KIND@STEP or KIND@STEP:PROCESS with "
                             f"KIND one of {KINDS}")
        kind, step, process = m.group(1), int(m.group(2)), m.group(3)
        if process is not None and kind == "bad_images_below":
            # Read in data-loading workers, which must not start JAX to learn their process index.
            raise ValueError(f"{ENV}: {item!r}: bad_images_below cannot be aimed at one process")
        planned.add((kind, step, int(process) if process is not None else None))
    return frozenset(planned)


def planned(kind: str, step: int) -> bool:
    for k, n, process in _planned():
        if (k, n) == (kind, step):
            if process is None:
                return True
            import jax      # only for a fault aimed at one process, which fires after JAX has started
            if process == jax.process_index():
                return True
    return False


def poison_batch(step: int, batch: dict) -> dict:
    """nan_batch@N: every floating-point array of step N's host batch becomes NaN."""
    if not planned("nan_batch", step):
        return batch
    return {k: np.full_like(v, np.nan) if np.issubdtype(np.asarray(v).dtype, np.floating) else v
            for k, v in batch.items()}


def image_bytes(index: int, data: bytes) -> bytes:
    """bad_images_below@N: the stored bytes of images < N are replaced by undecodable ones."""
    if any(kind == "bad_images_below" and index < n for kind, n, _ in _planned()):
        return b"\xff\xd8 injected fault: not a JPEG \xff\xd9"
    return data


def after_step(step: int, wait_for_saves: Callable[[], None]) -> None:
    if planned("sigkill_after_step", step):
        wait_for_saves()   # a deterministic point: the checkpoints started before step N have committed
        os.kill(os.getpid(), signal.SIGKILL)
    if planned("sigterm_after_step", step):
        os.kill(os.getpid(), signal.SIGTERM)


def in_save(step: int, checkpoint_dir) -> None:
    """Called right after Orbax has accepted the (asynchronous) save of `step`: sigkill_in_save waits
    until the step's temporary directory is on disk, then kills the process mid-write."""
    if not planned("sigkill_in_save", step):
        return
    deadline = time.time() + 10
    while not glob.glob(os.path.join(str(checkpoint_dir), f"{step}.orbax-checkpoint-tmp*")) and time.time() < deadline:
        time.sleep(0.001)
    os.kill(os.getpid(), signal.SIGKILL)
