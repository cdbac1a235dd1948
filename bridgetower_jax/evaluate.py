"""Evaluate a trained model on `config.eval.spec` (or `--split`):

    python -m bridgetower_jax.evaluate --config configs/<file>.py[:variant] --workdir DIR [--split vqav2:val]
        [--step latest|best|N]

VQA: VQA score (soft targets) on a split with answers, plus the EvalAI submission JSON
(`WORKDIR/vqa_submission_<split>.json`) on every split; NLVR2 / SNLI-VE: accuracy; retrieval:
Recall@1/5/10 both ways from the ITC shortlist re-ranked by ITM (`eval.k_test`); pre-training:
MLM / ITM accuracy and losses. Results are printed, appended to metrics.jsonl and written to
`WORKDIR/eval_<split>.json`. The parameters are the newest checkpoint in WORKDIR (`--step latest`),
the one that scored best during training (`--step best`, with config.eval.keep_best) or step N.
"""
from __future__ import annotations

import json
import logging

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from bridgetower_jax import compile_cache, flops, host_memory, paths, sharding, tasks, train
from bridgetower_jax.checkpoint import TrainCheckpointer
from bridgetower_jax.metrics import retrieval as retrieval_metrics
from bridgetower_jax.metrics import vqa as vqa_metrics
from bridgetower_jax.models import BridgeTowerForPreTraining

log = logging.getLogger("bridgetower_jax")


def _gathered(batches: list[dict]) -> dict:
    """Concatenate this process's eval batches and gather every process's rows (same on all hosts)."""
    local = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    return {k: np.asarray(multihost_utils.process_allgather(v, tiled=True)) for k, v in local.items()}


def evaluate_vqa(exp: train.Experiment, params, tokenizer, spec: str, out_dir=None) -> dict:
    """VQA score (on splits with answers) and, with `out_dir`, the EvalAI submission file of the argmax
    answers, from one pass over `spec`. The test splits' answers are not published: no score there."""
    from bridgetower_jax import resume
    from bridgetower_jax.data import sources
    cfg = exp.cfg
    scored = sources.answers_published(spec)
    keep = ("question_id", "example_mask") if out_dir is not None else ()
    results, rows = train.evaluate_split(exp, params, tokenizer, spec, keep=keep)
    if not scored:
        results.pop("vqa_score")
    if out_dir is None:
        return results
    rows = _gathered([rows])
    results["submission"] = str(epath.Path(out_dir) / f"vqa_submission_{spec.replace(':', '_')}.json")
    error = None
    if jax.process_index() == 0:
        vocabulary = sources.answer_vocabulary(cfg.data.data_dir, sources.parse_dataset_spec(spec)[0])
        try:
            vqa_metrics.write_submission(results["submission"], rows["question_id"],
                                         [vocabulary[i] for i in rows[tasks.PREDICTION]],
                                         example_mask=rows["example_mask"])
        except Exception as e:   # noqa: BLE001 - re-raised below, on every process
            error = e
    # Every process learns of a failed write: the others would otherwise go on to a collective (the next
    # step, a checkpoint save) and wait for process 0 for ever.
    if not resume.all_processes_agree(error is None):
        raise error if error is not None else RuntimeError(
            f"process 0 could not write {results['submission']} (its log says why)")
    return results


def evaluate_retrieval(exp: train.Experiment, params, tokenizer, spec: str) -> dict:
    """Recall@K over all images x all texts of `spec`: ITC shortlist (k_test), ITM re-rank."""
    from bridgetower_jax.data import pipeline
    cfg, model = exp.cfg, exp.model
    images_it, texts_it = pipeline.make_retrieval_eval_iterators(
        cfg.data, cfg.data.data_dir, tokenizer, spec=spec, process_index=jax.process_index(),
        process_count=jax.process_count(), batch_size=cfg.eval.batch_size // jax.process_count())
    image_embed = jax.jit(lambda p, x: model.apply({"params": p}, x,
                                                   method=BridgeTowerForPreTraining.image_contrastive_embeds))
    text_embed = jax.jit(lambda p, i, m: model.apply({"params": p}, i, m,
                                                     method=BridgeTowerForPreTraining.text_contrastive_embeds))
    spec_ = sharding.batch_sharding(exp.mesh).spec

    def host(x):
        return np.asarray(multihost_utils.global_array_to_host_local_array(x, exp.mesh, spec_))

    image_rows, text_rows = [], []
    for local in images_it:
        with exp.context():
            emb = image_embed(params, sharding.global_batch({"x": local["pixel_values"]}, exp.mesh)["x"])
        # Pixels are kept (as float16) so the ITM re-rank can fuse any shortlisted pair.
        image_rows.append({"embeds": host(emb), "pixels": local["pixel_values"].astype(np.float16),
                           "index": local["image_index"], "mask": local["example_mask"]})
    for local in texts_it:
        g = sharding.global_batch({"i": local["input_ids"], "m": local["attention_mask"]}, exp.mesh)
        with exp.context():
            emb = text_embed(params, g["i"], g["m"])
        text_rows.append({"embeds": host(emb), "ids": local["input_ids"], "attn": local["attention_mask"],
                          "index": local["text_index"], "image": local["image_index"], "mask": local["example_mask"]})
    images, texts = _gathered(image_rows), _gathered(text_rows)
    image_embeds = retrieval_metrics.rows_by_index(images["embeds"], images["index"], images["mask"])
    pixels = retrieval_metrics.rows_by_index(images["pixels"], images["index"], images["mask"])
    text_embeds = retrieval_metrics.rows_by_index(texts["embeds"], texts["index"], texts["mask"])
    ids = retrieval_metrics.rows_by_index(texts["ids"], texts["index"], texts["mask"])
    attn = retrieval_metrics.rows_by_index(texts["attn"], texts["index"], texts["mask"])
    text_to_image = retrieval_metrics.rows_by_index(texts["image"], texts["index"], texts["mask"])

    # Each chunk: C pairs over C / P images, every image serving P consecutive texts, so the vision
    # tower runs once per image of the chunk, not once per pair. P is chosen from how many short-listed
    # pairs each image has, weighing padding rows against vision passes by their FLOPs.
    itm = jax.jit(lambda p, i, m, x: model.apply({"params": p}, i, m, x,
                                                 method=BridgeTowerForPreTraining.itm_shared_images)[:, 1])
    chunk = max(jax.device_count(), cfg.eval.batch_size // jax.device_count() * jax.device_count())
    model_config, text_len = tasks.model_config(cfg), ids.shape[1]
    image_flops = flops.image_side_flops(model_config)
    image_cost = image_flops / (flops.forward_flops(model_config, text_len, pooled_only=True) - image_flops)

    def texts_per_image(pairs_per_image):
        p = retrieval_metrics.cheapest_texts_per_image(pairs_per_image, chunk, image_cost,
                                                       images_multiple_of=sharding.batch_shards(exp.mesh))
        if jax.process_index() == 0:
            log.info("retrieval re-rank: %d pairs, %d texts per vision pass (chunks of %d pairs)",
                     int(np.sum(pairs_per_image)), p, chunk)
        return p

    def itm_score_fn(image_ids, text_ids, valid):
        del valid   # padding pairs are scored and ignored by the caller
        batch = sharding.global_batch_from_whole(          # every process holds the whole chunk
            {"i": ids[text_ids], "m": attn[text_ids], "x": pixels[image_ids].astype(np.float32)}, exp.mesh)
        with exp.context():
            return np.asarray(multihost_utils.process_allgather(itm(params, batch["i"], batch["m"], batch["x"]),
                                                                tiled=True))

    scores = retrieval_metrics.itc_then_itm_scores(image_embeds, text_embeds, itm_score_fn, cfg.eval.k_test,
                                                   chunk_size=chunk, texts_per_image=texts_per_image)
    return retrieval_metrics.recall_at_k(scores, text_to_image)


def evaluate(exp: train.Experiment, params, tokenizer, spec: str, out_dir=None) -> dict:
    """Task metrics on `spec` (the trainer calls this at the end of training)."""
    cfg = exp.cfg
    if cfg.task == "retrieval":
        return evaluate_retrieval(exp, params, tokenizer, spec)
    if cfg.task == "vqa":
        return evaluate_vqa(exp, params, tokenizer, spec, out_dir)
    return train.evaluate_split(exp, params, tokenizer, spec)[0]


def _checkpoint_step(ckpt: TrainCheckpointer, which: str, workdir: str) -> int:
    """--step: latest, best or a step number -> a step of WORKDIR/checkpoints."""
    steps = ckpt.all_steps()
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints: train first (python -m bridgetower_jax.train)")
    if which == "latest":
        return ckpt.latest_step()
    if which == "best":
        if not ckpt.best_metric:
            raise ValueError("--step best: config.eval.keep_best names no score, so no best checkpoint was kept")
        step = ckpt.best_step()
        if step is None:
            raise FileNotFoundError(f"--step best: no checkpoint in {workdir}/checkpoints was evaluated on "
                                    f"{ckpt.best_metric} (steps {sorted(steps)})")
        return step
    if not which.isdigit() or int(which) not in steps:
        raise ValueError(f"--step {which!r}: use latest, best or one of the kept steps {sorted(steps)}")
    return int(which)


def run(cfg, workdir: str, split: str | None = None, which: str = "latest") -> dict:
    compile_cache.enable(cfg.compilation_cache_dir)
    tokenizer = train.load_data_assets(cfg)
    exp = train.build_experiment(cfg)
    ckpt = TrainCheckpointer(workdir, best_metric=cfg.eval.keep_best, read_only=True)
    step = _checkpoint_step(ckpt, which, workdir)
    state = ckpt.restore(step, train.state_target(exp))
    ckpt.close()
    spec = split or cfg.eval.spec
    if not spec:
        raise ValueError("nothing to evaluate: set --split or config.eval.spec")
    results = evaluate(exp, state.params, tokenizer, spec, out_dir=workdir)
    if jax.process_index() == 0:
        out = str(epath.Path(workdir) / f"eval_{spec.replace(':', '_')}.json")
        paths.write_text(out, json.dumps({"step": int(step), "split": spec, **results}, indent=2))
        log.info("evaluated step %d on %s: %s (written to %s); %s", step, spec, results, out,
                 compile_cache.summary())
    return results


def main(argv) -> None:
    from absl import flags
    del argv
    host_memory.retain_freed_memory()
    FLAGS = flags.FLAGS
    train.setup_logging()
    train.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    run(FLAGS.config, FLAGS.workdir, FLAGS.split, FLAGS.step)


if __name__ == "__main__":
    from absl import app, flags
    train.define_flags()
    flags.DEFINE_string("split", None, "dataset split to evaluate, e.g. vqav2:val (default: config.eval.spec)")
    flags.DEFINE_string("step", "latest", "checkpoint to evaluate: latest, best (the best score on config.eval.spec "
                                          "during training, config.eval.keep_best) or a step number")
    app.run(main)
