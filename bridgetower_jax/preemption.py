"""Preemption: SIGTERM -> finish the step, write a checkpoint (with the data iterator), exit 75.

A preempted TPU VM receives SIGTERM some seconds before it is stopped. The trainer asks
`PreemptionWatcher.stop_requested(step)` after every step; once it says yes, every process
saves the same step (the checkpoint is collective), waits for the write to commit, and the run
ends with `Preempted` (exit code 75, sysexits' EX_TEMPFAIL: "try again"). Rerunning the same
command resumes from that checkpoint.

How the processes agree on the step:
- `jax.distributed` is initialised (multi-host pods, also single TPU VMs): JAX's preemption
  service owns SIGTERM, tells every process, and `reached_preemption_sync_point(step)` becomes
  true at the same step everywhere, without a device round trip.
- one process without `jax.distributed`: a Python SIGTERM handler sets a flag.
- several processes with the preemption service switched off (jax_enable_preemption_service=False):
  the same handler, and the flags are OR-ed over processes every step (a blocking all-gather; a
  fallback only).
"""
from __future__ import annotations

import logging
import signal
import threading

import jax
import numpy as np

log = logging.getLogger("bridgetower_jax")

EXIT_PREEMPTED = 75


class Preempted(Exception):
    """The run stopped on SIGTERM after writing a checkpoint; rerun the same command to resume."""
    exit_code = EXIT_PREEMPTED

    def __init__(self, step: int, checkpoint_dir):
        self.step = step
        super().__init__(f"preempted (SIGTERM): stopped after step {step} with a complete checkpoint in "
                         f"{checkpoint_dir}/{step}; rerun the same command to resume from it "
                         f"(exit code {EXIT_PREEMPTED})")


def _jax_preemption_service() -> bool:
    from jax._src import distributed
    return distributed.global_state.client is not None and \
        distributed.global_state.preemption_sync_manager is not None


class PreemptionWatcher:
    """Created before the training loop, closed after it; `stop_requested(step)` is the same on every
    process."""

    def __init__(self):
        self.requested = False
        self._previous = None
        self._uses_jax_service = _jax_preemption_service()
        if self._uses_jax_service:
            return
        if threading.current_thread() is not threading.main_thread():
            log.warning("training outside the main thread: SIGTERM will not trigger a checkpoint")
            return
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def close(self) -> None:
        """Give SIGTERM back its previous handler."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _on_sigterm(self, signum, frame) -> None:
        del signum, frame
        if not self.requested:
            log.warning("SIGTERM received: finishing the current step, then checkpoint and exit")
        self.requested = True

    def stop_requested(self, step: int) -> bool:
        if self._uses_jax_service:
            from jax.experimental import multihost_utils
            return bool(multihost_utils.reached_preemption_sync_point(step))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            flags = multihost_utils.process_allgather(np.asarray([self.requested], np.int32))
            return bool(np.any(flags))
        return self.requested
