"""Non-finite loss or gradients: never applied, never saved; `config.nonfinite` says what else happens.

Inside the jitted step (both policies): a step whose loss or gradient norm is not finite leaves the
parameters and the optimizer state unchanged (`lax.cond` on one flag, inside the step) and adds one to
`TrainState.nonfinite_steps` (checkpointed, so the count survives restarts). A finite gradient norm
means every squared gradient is finite, so AdamW's moments and update are finite too: the update
needs no check of its own (given `optim.eps` > 0, which validation requires, and a finite state,
which this guard keeps). The cond (rather than a `where` between old and new values) lets the update
write the donated parameters and moments in place on CPU: no second pass over them, no second copy.
(On GPU, XLA reads a conditional's predicate on the host, which may delay launching the update until
the gradients are done; not yet measured there.)

On the host, `NonFiniteMonitor` reads each step's flag one step late (while the next step runs,
so the device never waits for the host):
- "skip": log the skipped step and go on; `nonfinite_steps` is in every metrics record.
- "halt": stop with `NonFiniteHalt` naming the step and its batch (the data iterator position
  before it), before any later checkpoint is written (exit code 65).

`assert_finite` guards every checkpoint save on top of that.
"""
from __future__ import annotations

import collections
import logging
from typing import Callable

import jax
import jax.numpy as jnp
import optax

log = logging.getLogger("bridgetower_jax")

POLICIES = ("halt", "skip")
EXIT_NONFINITE = 65   # sysexits' EX_DATAERR: retrying the same command would fail the same way


class NonFiniteHalt(Exception):
    exit_code = EXIT_NONFINITE


# ---------------------------------------------------------------------------------------------
# Inside the jitted step
# ---------------------------------------------------------------------------------------------
def update_if_finite(tx: optax.GradientTransformation, grads, opt_state, params, loss, grad_norm):
    """-> (params, opt_state, skipped): `tx` applied where loss and gradient norm are finite, else the
    inputs unchanged."""
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def apply(operands):
        grads, opt_state, params = operands
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def keep(operands):
        _, opt_state, params = operands
        return params, opt_state
    params, opt_state = jax.lax.cond(finite, apply, keep, (grads, opt_state, params))
    return params, opt_state, (~finite).astype(jnp.int32)


# ---------------------------------------------------------------------------------------------
# On the host
# ---------------------------------------------------------------------------------------------
class NonFiniteMonitor:
    """Applies the policy to each step's `skipped` metric, one step late (see the module docstring)."""

    def __init__(self, policy: str, data_iter, report: Callable[[str], None] = log.warning):
        if policy not in POLICIES:
            raise ValueError(f"config.nonfinite={policy!r} must be one of {POLICIES}")
        self.policy, self.data_iter, self.report = policy, data_iter, report
        self._positions: collections.OrderedDict = collections.OrderedDict()
        self._pending: tuple | None = None

    def before_batch(self, step: int) -> None:
        """Remember where the data iterator stood before step `step`'s batch (its identifier)."""
        self._positions[step] = self.data_iter.get_state() if hasattr(self.data_iter, "get_state") else None
        while len(self._positions) > 3:
            self._positions.popitem(last=False)

    def after_step(self, step: int, metrics: dict) -> None:
        """Check the previous step (finished or nearly so) and remember this one."""
        pending, self._pending = self._pending, (step, metrics)
        if pending is not None:
            self._check(*pending)

    def flush(self) -> None:
        """Check the newest step now (before a checkpoint and at the end of training)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self._check(*pending)

    def _check(self, step: int, metrics: dict) -> None:
        if not int(jax.device_get(metrics["skipped"])):
            return
        values = {k: float(v) for k, v in jax.device_get(
            {k: metrics[k] for k in ("loss", "grad_norm", "nonfinite_steps") if k in metrics}).items()}
        where = (f"step {step} (loss {values.get('loss')}, grad_norm {values.get('grad_norm')}); its batch: "
                 f"process {jax.process_index()}'s data iterator state before it was "
                 f"{self._positions.get(step)}")
        if self.policy == "halt":
            raise NonFiniteHalt(
                f"non-finite loss or gradients at {where}. The update was not applied and nothing after "
                f"it was checkpointed. Set config.nonfinite='skip' to skip such steps, or inspect that "
                f"batch (exit code {EXIT_NONFINITE})")
        self.report(f"skipped the update of {where} (config.nonfinite='skip'; "
                    f"{int(values.get('nonfinite_steps', 0))} step(s) skipped so far)")


@jax.jit
def _all_finite_per_leaf(xs: list) -> jax.Array:
    return jnp.stack([jnp.all(jnp.isfinite(x)) for x in xs])


def assert_finite(tree, what: str) -> None:
    """Raise NonFiniteHalt naming the non-finite leaves of `tree` (a pytree of arrays)."""
    leaves = [(path, x) for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    finite = jax.device_get(_all_finite_per_leaf([x for _, x in leaves])) if leaves else []
    bad = [jax.tree_util.keystr(path) for (path, _), ok in zip(leaves, finite) if not ok]
    if bad:
        raise NonFiniteHalt(f"refusing to save {what}: {len(bad)} array(s) hold NaN or inf, e.g. {bad[:5]}")
