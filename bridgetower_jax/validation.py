"""Config and input checks that run before anything compiles, each naming the config key at fault.

Checked elsewhere, also before compiling: the mesh against the devices
(`sharding.resolve_mesh_shape`, `mesh.num_devices`), the batch against the mesh
(`train.validate_batch`), the tokenizer against `model.text.vocab_size` (`train.load_data_assets`),
unknown keys (`--config.x=...` on a locked config fails at flag parsing), and a workdir checkpoint
of another architecture (`resume.check_architecture`).
"""
from __future__ import annotations

from bridgetower_jax import nonfinite


def validate_config(cfg) -> None:
    """Raise ValueError / FileNotFoundError for the first problem, naming the config key."""
    _check_loop(cfg)
    _check_evaluation(cfg)
    _check_image_geometry(cfg)
    _check_datasets(cfg)


def _check_loop(cfg) -> None:
    for key in ("log_every", "checkpoint_every"):
        if cfg[key] < 1:
            raise ValueError(f"config.{key}={cfg[key]} must be >= 1")
    if cfg.total_steps < 0 or (cfg.total_steps == 0 and not (cfg.epochs or 0) > 0):
        raise ValueError(f"config.total_steps={cfg.total_steps}, config.epochs={cfg.epochs}: set total_steps >= 1, "
                         "or total_steps=0 and epochs > 0 (passes over config.data.datasets)")
    if cfg.nonfinite not in nonfinite.POLICIES:
        raise ValueError(f"config.nonfinite={cfg.nonfinite!r} must be one of {nonfinite.POLICIES}")
    if cfg.optim.eps <= 0:
        # AdamW divides by sqrt(nu) + eps: with eps 0 a parameter whose gradient is exactly zero gets
        # 0/0, which the non-finite guard (loss and gradient norm) would not see.
        raise ValueError(f"config.optim.eps={cfg.optim.eps} must be > 0")


def _check_evaluation(cfg) -> None:
    from bridgetower_jax import tasks
    if cfg.eval_every < 0 or (cfg.eval_every >= 1 and cfg.eval_every != int(cfg.eval_every)):
        raise ValueError(f"config.eval_every={cfg.eval_every}: 0 (at the end only), a fraction of total_steps "
                         "below 1, or a whole number of steps")
    if cfg.eval.keep_best:
        if cfg.eval.keep_best not in tasks.SCORES[cfg.task]:
            raise ValueError(f"config.eval.keep_best={cfg.eval.keep_best!r} is not a score of task {cfg.task} "
                             f"(one of {', '.join(tasks.SCORES[cfg.task])}; '' keeps no best checkpoint)")
        if not cfg.eval.spec:
            raise ValueError(f"config.eval.keep_best={cfg.eval.keep_best!r} needs config.eval.spec, the split "
                             "that scores the checkpoints")
        if cfg.task == "vqa":
            from bridgetower_jax.data import sources
            if not sources.answers_published(cfg.eval.spec):
                raise ValueError(f"config.eval.keep_best={cfg.eval.keep_best!r}: config.eval.spec="
                                 f"{cfg.eval.spec!r} has no published answers to score (use a val split)")


def _check_image_geometry(cfg) -> None:
    vision = cfg.model.vision
    if vision.image_size % vision.patch_size:
        raise ValueError(f"config.model.vision.image_size={vision.image_size} is not a multiple of "
                         f"config.model.vision.patch_size={vision.patch_size}")


# The kind of dataset (its builder's KIND) each task reads.
TASK_DATA_KIND = {"pretrain": "captions", "retrieval": "captions", "vqa": "vqa", "nlvr2": "nlvr2",
                  "snli_ve": "snli_ve"}


def _check_datasets(cfg) -> None:
    """Every training and evaluation split must be built in data.data_dir, and be of the task's kind."""
    from bridgetower_jax.data import builders, pipeline, sources
    specs = [("config.data.datasets", s) for s in pipeline.train_dataset_specs(cfg.task, cfg.data)]
    if cfg.eval.spec:
        specs.append(("config.eval.spec", cfg.eval.spec))
    for key, spec in specs:
        try:
            sources.open_spec(cfg.data.data_dir, spec)
        except (FileNotFoundError, ValueError) as e:
            raise type(e)(f"{key} names {spec!r}, which config.data.data_dir={cfg.data.data_dir!r} does not "
                          f"provide: {e}") from None
        name = sources.parse_dataset_spec(spec)[0]
        kind, wanted = builders.DATASETS[name].builder.KIND, TASK_DATA_KIND[cfg.task]
        if kind != wanted:
            raise ValueError(f"{key} names {spec!r}, a {kind} dataset; task {cfg.task} reads {wanted} datasets "
                             f"({', '.join(n for n, d in builders.DATASETS.items() if d.builder.KIND == wanted)})")
