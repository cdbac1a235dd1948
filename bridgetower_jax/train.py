"""Pre-training and fine-tuning loop, the same code on one CPU and on a multi-host pod.

    python -m bridgetower_jax.train --config configs/<file>.py[:variant] --workdir DIR [--config.key=value ...]

Sections: experiment set-up (validated before anything compiles) -> sharded state creation
-> the pure, jitted train step -> evaluation -> the loop (resume, log, checkpoint).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import time
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from bridgetower_jax import flops as flops_lib
from bridgetower_jax import faults, host_memory, nonfinite, optim, param_surgery, preemption, resume, sharding, tasks
from bridgetower_jax import compile_cache, paths, validation
from bridgetower_jax.checkpoint import TrainCheckpointer, load_params
from bridgetower_jax.metric_writer import MetricWriter

log = logging.getLogger("bridgetower_jax")


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    nonfinite_steps: jax.Array   # steps whose update was skipped for NaN/inf (see nonfinite.py)


# ---------------------------------------------------------------------------------------------
# Experiment set-up
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Experiment:
    cfg: Any
    model: nn.Module
    mesh: jax.sharding.Mesh
    rules: tuple
    tx: optax.GradientTransformation
    schedule: Callable
    init_fn: Callable                 # rng -> boxed TrainState
    state_sharding: Any

    def context(self):
        """Trace under the mesh and the logical rules (`with mesh:` alone drops Flax constraints)."""
        return _Context(self.mesh, self.rules)


class _Context:
    def __init__(self, mesh, rules):
        self._mesh_cm, self._rules_cm = jax.set_mesh(mesh), nn.logical_axis_rules(rules)

    def __enter__(self):
        self._mesh_cm.__enter__()
        self._rules_cm.__enter__()

    def __exit__(self, *exc):
        self._rules_cm.__exit__(*exc)
        self._mesh_cm.__exit__(*exc)


def validate_batch(cfg, mesh) -> None:
    """The global batch must split evenly over processes, batch shards and accumulation steps, in
    examples, or in pre-training in ITM pairs (a matched and a mismatched row)."""
    accum, shards, procs = cfg.optim.grad_accum_steps, sharding.batch_shards(mesh), jax.process_count()
    unit = tasks.rows_per_unit(cfg.task)
    what = f"{unit} (one ITM pair) x " if unit > 1 else ""
    if accum < 1:
        raise ValueError(f"optim.grad_accum_steps={accum} must be >= 1")
    if cfg.batch_size % (unit * procs):
        raise ValueError(f"batch_size={cfg.batch_size} is not divisible by {what}the {procs} processes")
    if cfg.batch_size % (unit * accum * shards):
        raise ValueError(f"batch_size={cfg.batch_size} must be divisible by {what}optim.grad_accum_steps ({accum}) x "
                         f"mesh.data*mesh.fsdp ({shards}) = {unit * accum * shards}")


def build_experiment(cfg) -> Experiment:
    """Everything the loop needs, checked before any compilation."""
    devices = jax.devices()
    if cfg.mesh.num_devices:
        if cfg.mesh.num_devices > len(devices):
            raise ValueError(f"mesh.num_devices={cfg.mesh.num_devices} but only {len(devices)} devices exist")
        devices = devices[:cfg.mesh.num_devices]
    mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor, cfg.mesh.num_slices, devices)
    validate_batch(cfg, mesh)
    model = tasks.build_model(cfg)
    tx, schedule = optim.make_optimizer(cfg.optim, cfg.total_steps)
    rules = sharding.DEFAULT_RULES

    def init_fn(rng):
        params = model.init(rng, *tasks.init_inputs(cfg))["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                          nonfinite_steps=jnp.zeros((), jnp.int32))

    with _Context(mesh, rules):
        abstract = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
        state_sharding = sharding.logical_shardings(abstract, mesh, rules)
    return Experiment(cfg, model, mesh, rules, tx, schedule, init_fn, state_sharding)


def init_state(exp: Experiment, rng) -> TrainState:
    """Parameters created directly in their shards (no host copy of the full model)."""
    with exp.context():
        return jax.jit(lambda r: nn.meta.unbox(exp.init_fn(r)), out_shardings=exp.state_sharding)(rng)


def state_target(exp: Experiment):
    """ShapeDtypeStructs with shardings: restore a checkpoint straight onto this mesh."""
    with exp.context():
        abstract = jax.eval_shape(lambda r: nn.meta.unbox(exp.init_fn(r)), jax.random.PRNGKey(0))
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, exp.state_sharding)


# ---------------------------------------------------------------------------------------------
# Train step
# ---------------------------------------------------------------------------------------------
def _split_microbatches(batch: dict, accum: int, units: int) -> dict:
    """[B, ...] -> [accum, B / accum, ...] with microbatch k = units k, k + accum, ... so that every
    device keeps its own examples (the batch axis stays sharded). A unit is one example, or in
    pre-training one ITM pair: two rows of the [B] arrays and one row of the [B/2] negatives."""
    def split(x):
        per_unit = x.shape[0] // units
        x = x.reshape(units // accum, accum, per_unit, *x.shape[1:]).swapaxes(0, 1)
        return x.reshape(accum, x.shape[1] * per_unit, *x.shape[3:])
    return jax.tree.map(split, batch)


def make_train_step(exp: Experiment):
    cfg, model, tx, accum = exp.cfg, exp.model, exp.tx, exp.cfg.optim.grad_accum_steps
    base_rng = jax.random.PRNGKey(cfg.seed)

    def loss_fn(params, batch, rng):
        return tasks.loss_and_metrics(cfg, model, params, batch, rng)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state: TrainState, batch: dict):
        rng = jax.random.fold_in(base_rng, state.step)
        if accum == 1:
            (_, metrics), grads = grad_fn(state.params, batch, rng)
        else:
            def body(carry, xs):
                micro, k = xs
                (_, m), g = grad_fn(state.params, micro, jax.random.fold_in(rng, k))
                return jax.tree.map(jnp.add, carry, (g, m)), None
            zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(lambda: grad_fn(state.params, _first_micro(batch, accum),
                                                                                rng)[::-1]))
            zeros = (zeros[0], zeros[1][1])
            units = batch["input_ids"].shape[0] // tasks.rows_per_unit(cfg.task)
            (grads, metrics), _ = jax.lax.scan(body, zeros, (_split_microbatches(batch, accum, units),
                                                            jnp.arange(accum)))
            grads, metrics = jax.tree.map(lambda x: x / accum, (grads, metrics))
        grad_norm = optax.tree.norm(grads)
        params, opt_state, skipped = nonfinite.update_if_finite(tx, grads, state.opt_state, state.params,
                                                                metrics["loss"], grad_norm)
        nonfinite_steps = state.nonfinite_steps + skipped
        # The learning rate of this step's update: optax's schedule counts applied updates, and a
        # skipped step applies none, so it trails the step number by the steps skipped so far.
        lr = exp.schedule(state.step - state.nonfinite_steps)
        metrics = {**metrics, "grad_norm": grad_norm, "lr": lr, "skipped": skipped,
                   "nonfinite_steps": nonfinite_steps}
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                          nonfinite_steps=nonfinite_steps), metrics

    compiled = {}

    def run(state: TrainState, batch: dict):
        key = jax.tree.structure(batch), tuple(x.ndim for x in jax.tree.leaves(batch))
        if key not in compiled:
            batch_sharding = jax.tree.map(lambda x: sharding.batch_sharding(exp.mesh, x.ndim), batch)
            compiled[key] = jax.jit(train_step, in_shardings=(exp.state_sharding, batch_sharding),
                                    out_shardings=(exp.state_sharding, None), donate_argnums=0)
        with exp.context():
            return compiled[key](state, batch)
    return run


def _first_micro(batch: dict, accum: int) -> dict:
    return jax.tree.map(lambda x: x[: x.shape[0] // accum], batch)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
def make_eval_step(exp: Experiment):
    cfg, model = exp.cfg, exp.model
    jitted = jax.jit(lambda params, batch: tasks.eval_sums(cfg, model, params, batch))

    def run(params, batch):
        with exp.context():
            return jitted(params, batch)
    return run


def evaluate_split(exp: Experiment, params, tokenizer, spec: str, keep: tuple[str, ...] = ()):
    """Task metrics over one split (every example once, padding excluded), and this process's rows of
    the batch keys in `keep` (e.g. question_id, example_mask) and of `tasks.PREDICTION`, concatenated
    ({} without `keep`): one pass serves both the scores and the predictions."""
    from bridgetower_jax.data import pipeline
    cfg = exp.cfg
    it = pipeline.make_eval_iterator(cfg.task, cfg.data, cfg.data.data_dir, tokenizer, spec=spec,
                                     process_index=jax.process_index(), process_count=jax.process_count(),
                                     batch_size=cfg.eval.batch_size // jax.process_count())
    step = make_eval_step(exp)
    totals: dict[str, float] = {}
    rows: dict[str, list] = {k: [] for k in (*keep, tasks.PREDICTION)} if keep else {}
    for local in it:
        sums = step(params, sharding.global_batch(local, exp.mesh))
        prediction = sums.pop(tasks.PREDICTION, None)
        if keep and prediction is None:
            raise ValueError(f"task {cfg.task} makes no per-example predictions to keep")
        if keep:
            rows[tasks.PREDICTION].append(np.asarray(multihost_utils.global_array_to_host_local_array(
                prediction, exp.mesh, sharding.batch_sharding(exp.mesh).spec)))
            for k in keep:
                rows[k].append(local[k])
        for k, v in jax.device_get(sums).items():
            totals[k] = totals.get(k, 0.0) + float(v)
    count = max(totals.pop("count", 0.0), 1.0)
    return {k: v / count for k, v in totals.items()}, {k: np.concatenate(v) for k, v in rows.items()}


# ---------------------------------------------------------------------------------------------
# Data, initial parameters
# ---------------------------------------------------------------------------------------------
def load_data_assets(cfg):
    """Tokenizer and task facts that the config must agree with (checked before compiling)."""
    from bridgetower_jax.data import sources, tokenizer as tokenizer_lib
    for key in ("data_dir", "tokenizer_dir"):
        if not cfg.data.get(key):
            raise ValueError(f"config.data.{key} is not set (pass --config.data.{key}=PATH)")
        if key == "tokenizer_dir" and "://" in cfg.data[key]:
            raise ValueError(f"config.data.tokenizer_dir={cfg.data[key]!r}: the tokenizer is read from a local "
                             "directory (transformers cannot open URLs); copy it to every host")
        if not paths.is_directory(cfg.data[key], f"config.data.{key}"):
            raise FileNotFoundError(f"config.data.{key}={cfg.data[key]!r} is not a directory")
    tokenizer = tokenizer_lib.load_tokenizer(cfg.data.tokenizer_dir)
    vocab = cfg.model.text.vocab_size
    if len(tokenizer) > vocab:
        raise ValueError(f"the tokenizer in {cfg.data.tokenizer_dir} has {len(tokenizer)} tokens but "
                         f"config.model.text.vocab_size={vocab}")
    if tokenizer.pad_token_id != cfg.model.text.pad_token_id:
        raise ValueError(f"tokenizer pad id {tokenizer.pad_token_id} != config.model.text.pad_token_id "
                         f"{cfg.model.text.pad_token_id}")
    if cfg.task == "vqa":
        # The head's size comes from the datasets this run trains and evaluates on, which must agree.
        from bridgetower_jax.data import pipeline
        specs = [*pipeline.train_dataset_specs("vqa", cfg.data),
                 *([cfg.eval.spec] if cfg.eval.spec else [])]
        try:
            answers = len(sources.shared_answer_vocabulary(
                cfg.data.data_dir, [sources.parse_dataset_spec(s)[0] for s in specs]))
        except (ValueError, FileNotFoundError) as e:
            raise type(e)(f"config.data.datasets / config.eval.spec: {e}") from None
        if cfg.heads.num_answers not in (-1, answers):
            raise ValueError(f"heads.num_answers={cfg.heads.num_answers} but the data has {answers} answers")
        with cfg.unlocked():
            cfg.heads.num_answers = answers
    return tokenizer


def _ceil(x: float) -> int:
    """math.ceil, but a value floating point puts a hair above a whole number is that number
    (0.1 epochs x 30 examples = 3.0000000000000004 batches is 3, not 4)."""
    return round(x) if math.isclose(x, round(x), rel_tol=1e-9) else math.ceil(x)


def resolve_total_steps(cfg, examples: int, report: Callable[[str], None]) -> None:
    """total_steps = 0: ceil(epochs x training examples / batch_size), counted in the built data, so
    that a recipe given in epochs keeps its length at another batch size or with other datasets. The
    result is stored in cfg (and so in every checkpoint's config; a resumed run derives it again, and
    `resume` says when it differs from the checkpoint's). `examples`: `pipeline.train_examples_per_epoch`."""
    from bridgetower_jax.data import pipeline
    if cfg.total_steps:
        if cfg.epochs:
            report(f"total_steps={cfg.total_steps} is set, so epochs={cfg.epochs:g} is not used")
        return
    cfg.total_steps = max(1, _ceil(cfg.epochs * examples / cfg.batch_size))
    report(f"total_steps {cfg.total_steps} = {cfg.epochs:g} epochs x {examples:,} examples of "
           f"{', '.join(pipeline.train_dataset_specs(cfg.task, cfg.data))} / batch {cfg.batch_size}")


def initial_state(exp: Experiment, report: Callable[[str], None]) -> TrainState:
    """Fresh state, then (if configured) parameters from `init_from` merged in with head surgery."""
    cfg = exp.cfg
    state = init_state(exp, jax.random.PRNGKey(cfg.seed))
    if cfg.init_from:
        _, loaded, _ = load_params(cfg.init_from)
        fresh = jax.device_get(state.params)
        merged, lines = param_surgery.merge(fresh, loaded, tasks.model_config(cfg))
        for line in lines:
            report(line)
        params = jax.device_put(merged, exp.state_sharding.params)
        with exp.context():
            state = state.replace(params=params, opt_state=jax.jit(
                exp.tx.init, out_shardings=exp.state_sharding.opt_state)(params))
    return state


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------
def _fmt_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Progress lines: step, epoch, losses, examples/s, MFU (where the peak is known) and ETA."""

    def __init__(self, cfg, model_config, start_step: int, examples_per_epoch: int):
        self.cfg, self.last_time, self.last_step, self.start = cfg, time.time(), start_step, time.time()
        self.examples_per_epoch = max(examples_per_epoch, 1)
        self.flops = flops_lib.train_flops_per_example(model_config, cfg.task, cfg.data.max_text_len,
                                                       itc=cfg.task == "pretrain" and cfg.objectives.itc > 0,
                                                       mlm_prob=cfg.data.mlm_prob)
        peak = flops_lib.peak_flops_per_device(cfg.peak_flops_per_device)
        self.peak = peak * jax.device_count() if peak else None

    def line(self, step: int, metrics: dict) -> tuple[str, dict]:
        now = time.time()
        steps = max(step - self.last_step, 1)
        examples_per_s = steps * self.cfg.batch_size / max(now - self.last_time, 1e-9)
        # Passes over the training data so far (with pre-training's mixture weights: examples seen / all).
        epoch = step * self.cfg.batch_size / self.examples_per_epoch
        extra = {"examples_per_second": examples_per_s, "epoch": epoch}
        parts = [f"step {step}/{self.cfg.total_steps}", f"epoch {epoch:.2f}", f"loss {metrics['loss']:.4f}"]
        parts += [f"{k} {v:.4f}" for k, v in metrics.items() if k.endswith(("_loss", "_accuracy", "_score"))]
        parts.append(f"{examples_per_s:.1f} ex/s")
        if self.peak:
            extra["mfu"] = examples_per_s * self.flops / self.peak
            parts.append(f"MFU {100 * extra['mfu']:.1f}%")
        eta = (self.cfg.total_steps - step) * (now - self.last_time) / steps
        parts.append(f"ETA {_fmt_duration(eta)}")
        self.last_time, self.last_step = now, step
        return " | ".join(parts), extra


def train_and_evaluate(cfg, workdir: str) -> dict:
    """Train `cfg` in `workdir` (resuming from its newest checkpoint); returns the last logged metrics."""
    paths.make_directory(workdir, "--workdir")
    report = log.info if jax.process_index() == 0 else (lambda _: None)
    compile_cache.enable(cfg.compilation_cache_dir)
    tokenizer = load_data_assets(cfg)
    validation.validate_config(cfg)
    from bridgetower_jax.data import pipeline, task_examples
    examples_per_epoch = pipeline.train_examples_per_epoch(cfg.task, cfg.data, cfg.data.data_dir)
    resolve_total_steps(cfg, examples_per_epoch, report)
    exp = build_experiment(cfg)
    local_batch = cfg.batch_size // jax.process_count()
    train_iter = pipeline.make_train_iterator(cfg.task, cfg.data, cfg.data.data_dir, tokenizer, seed=cfg.seed,
                                              process_index=jax.process_index(),
                                              process_count=jax.process_count(), batch_size=local_batch)
    ckpt = TrainCheckpointer(workdir, cfg.max_to_keep, best_metric=cfg.eval.keep_best)
    start, state = resume.restore_newest_complete(ckpt, state_target(exp), train_iter, cfg.to_dict(), report)
    if start is not None:
        report(f"resuming from {ckpt.directory}/{start}")
    else:
        state = initial_state(exp, report)
        start = 0
    model_config = tasks.model_config(cfg)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
    report(f"task {cfg.task}: {n_params / 1e6:.2f}M parameters on mesh {dict(exp.mesh.shape)} "
           f"({jax.process_count()} process(es)), global batch {cfg.batch_size}")
    writer = MetricWriter(workdir, resume_step=start)
    progress = Progress(cfg, model_config, start, examples_per_epoch)
    train_step = make_train_step(exp)
    last = {}
    monitor = nonfinite.NonFiniteMonitor(cfg.nonfinite, train_iter)
    watcher, bad_images = preemption.PreemptionWatcher(), 0
    eval_every = eval_interval(cfg)
    first_step_started = time.time()
    try:
        for step in range(start + 1, cfg.total_steps + 1):
            monitor.before_batch(step)
            local = faults.poison_batch(step, next(train_iter))
            bad_images += int(np.sum(local.pop(task_examples.BAD_IMAGES, 0)))
            batch = sharding.global_batch(local, exp.mesh)
            state, metrics = train_step(state, batch)
            if step == start + 1:    # how long starting took, and whether compiling it could be skipped
                jax.block_until_ready(metrics)
                report(f"first step done in {time.time() - first_step_started:.1f} s (compilation included); "
                       f"{compile_cache.summary()}")
            monitor.after_step(step, metrics)
            if step % cfg.log_every == 0 or step == cfg.total_steps:
                last = {k: float(v) for k, v in jax.device_get(metrics).items()}
                if cfg.data.skip_bad_records:   # substituted since this process started, all processes
                    last["bad_images"] = float(np.sum(multihost_utils.process_allgather(np.int64(bad_images))))
                text, extra = progress.line(step, last)
                report(text)
                writer.write(step, {**last, **extra})
            faults.after_step(step, ckpt.wait)
            if watcher.stop_requested(step):
                # No evaluation first: the checkpoint must be written within the preemption's grace period.
                # ckpt.wait() returns on every process only once process 0 has committed it (Orbax's commit
                # barrier): a scheduler that ends the job at the first exit cannot cut it short.
                monitor.flush()
                ckpt.save(step, state, train_iter, cfg.to_dict())
                ckpt.wait()
                raise preemption.Preempted(step, ckpt.directory)
            eval_due = bool(cfg.eval.spec) and (step == cfg.total_steps or (eval_every and step % eval_every == 0))
            save_due = step % cfg.checkpoint_every == 0 or step == cfg.total_steps
            if save_due or eval_due:
                monitor.flush()   # 'halt' stops before a checkpoint or an evaluation follows a non-finite step

            def save(scores=None):
                ckpt.save(step, state, train_iter, cfg.to_dict(),
                          metrics={k.removeprefix("eval/"): v for k, v in (scores or {}).items()})
            if eval_due and cfg.eval.keep_best:
                # The scores are kept with the checkpoint, so every evaluated step is saved after its
                # evaluation; one that fails still leaves the checkpoint that was due.
                evaluated = {}
                try:
                    evaluated = _evaluate_and_log(exp, state.params, tokenizer, step, writer, report, workdir)
                    last.update(evaluated)
                finally:
                    if save_due or evaluated:
                        save(evaluated)
            else:
                if save_due:      # (asynchronous: it is written while the evaluation runs)
                    save()
                if eval_due:
                    last.update(_evaluate_and_log(exp, state.params, tokenizer, step, writer, report, workdir))
        monitor.flush()
        if cfg.eval.spec and start >= cfg.total_steps:   # a finished run started again re-evaluates
            last.update(_evaluate_and_log(exp, state.params, tokenizer, cfg.total_steps, writer, report,
                                            workdir))
    finally:
        watcher.close()
        ckpt.wait()
        ckpt.close()
        writer.close()
    return last


def eval_interval(cfg) -> int:
    """Steps between evaluations from config.eval_every: 0 = at the end only; < 1 = that fraction of
    total_steps (0.1: every tenth of the run, every epoch of a 10-epoch recipe); >= 1 = steps."""
    every = cfg.eval_every
    if not 0 < every < 1:
        return int(every)
    # Rounded up: a last periodic evaluation a few steps before the final one would repeat it.
    return max(1, _ceil(every * cfg.total_steps))


def _evaluate_and_log(exp, params, tokenizer, step, writer, report, workdir) -> dict:
    from bridgetower_jax import evaluate   # evaluate builds on this module
    results = evaluate.evaluate(exp, params, tokenizer, exp.cfg.eval.spec, out_dir=workdir)
    numbers = {f"eval/{k}": float(v) for k, v in results.items() if isinstance(v, (int, float))}
    files = [f"{k} {v}" for k, v in results.items() if isinstance(v, str)]   # e.g. the VQA submission
    report(f"eval on {exp.cfg.eval.spec} at step {step}: "
           + " | ".join([f"{k} {v:.4f}" for k, v in numbers.items()] + files))
    if numbers:
        writer.write(step, numbers)
    return numbers


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def initialize_distributed(coordinator_address: str | None, num_processes: int | None,
                           process_id: int | None) -> None:
    """Explicit coordinator (flags or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID);
    else JAX's own cluster detection on Cloud TPU VMs and multi-task SLURM jobs; else one process."""
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("JAX_PROCESS_ID"):
        process_id = int(os.environ["JAX_PROCESS_ID"])
    if coordinator_address:
        if num_processes is None or process_id is None:
            raise ValueError("--coordinator_address needs --num_processes and --process_id")
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    elif _on_cloud_tpu_vm() or int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        # JAX finds the other workers itself (TPU metadata server, SLURM environment); on a
        # single-host TPU VM this is a harmless one-process initialisation.
        jax.distributed.initialize()


def _on_cloud_tpu_vm() -> bool:
    """TPU chips are visible as /dev/accel* (v2-v4) or /dev/vfio/<n> (v5e and later)."""
    import glob
    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def setup_logging() -> None:
    """Our progress lines at INFO on stderr; libraries (Orbax, absl) stay at WARNING."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    logging.getLogger().setLevel(logging.WARNING)
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.WARNING)


def main(argv) -> None:
    from absl import flags
    del argv
    host_memory.retain_freed_memory()
    FLAGS = flags.FLAGS
    setup_logging()
    initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    try:
        train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except (preemption.Preempted, nonfinite.NonFiniteHalt, resume.ArchitectureMismatch) as e:
        log.error("%s", e)
        sys.exit(e.exit_code)


def define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags
    config_flags.DEFINE_config_file("config", None, "experiment config file, e.g. configs/vqa.py:base",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics.jsonl and TensorBoard events")
    flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0 for multi-process runs")
    flags.DEFINE_integer("num_processes", None, "number of processes (with --coordinator_address)")
    flags.DEFINE_integer("process_id", None, "this process's index (with --coordinator_address)")
    flags.mark_flags_as_required(["config", "workdir"])


if __name__ == "__main__":
    from absl import app
    define_flags()
    app.run(main)
