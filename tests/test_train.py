"""The training loop end to end on the demo corpus: every task, sharding invariance, resume, errors."""
import json
import shutil

import jax
import numpy as np
import pytest

from bridgetower_jax import train
from bridgetower_jax.checkpoint import TrainCheckpointer
from bridgetower_jax.metric_writer import read_metrics
from configs import nlvr2, pretrain, retrieval_f30k, snli_ve, vqa
from train_fixtures import tiny_config

CONFIGS = {"pretrain": pretrain, "vqa": vqa, "nlvr2": nlvr2, "snli_ve": snli_ve, "retrieval": retrieval_f30k}
EVAL_METRIC = {"pretrain": "eval/mlm_accuracy", "vqa": "eval/vqa_score", "nlvr2": "eval/nlvr2_accuracy",
               "snli_ve": "eval/snli_ve_accuracy", "retrieval": "eval/r_mean"}


@pytest.mark.parametrize("task", list(CONFIGS))
def test_every_task_trains_checkpoints_and_evaluates(task, demo_data, tmp_path):
    overrides = {"total_steps": 2, "eval.spec": {"pretrain": "coco_karpathy:val", "vqa": "vqav2:val",
                                                 "nlvr2": "nlvr2:dev", "snli_ve": "snli_ve:dev",
                                                 "retrieval": "f30k_karpathy:test"}[task]}
    cfg = tiny_config(CONFIGS[task], *demo_data, **overrides)
    last = train.train_and_evaluate(cfg, str(tmp_path))
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records if "loss" in r] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    assert 0.0 <= last[EVAL_METRIC[task]] <= 1.0
    from bridgetower_jax import tasks
    assert {f"eval/{score}" for score in tasks.SCORES[task]} <= set(last)   # what eval.keep_best may name
    assert TrainCheckpointer(tmp_path).latest_step() == 2
    if task == "vqa":
        submission = json.loads((tmp_path / "vqa_submission_vqav2_val.json").read_text())
        assert len(submission) == 230 and {"question_id", "answer"} == set(submission[0])


def _params(workdir, cfg):
    exp = train.build_experiment(cfg)
    ckpt = TrainCheckpointer(workdir)
    state = ckpt.restore(ckpt.latest_step(), train.state_target(exp))
    ckpt.close()
    return jax.device_get(state.params)


def _losses(workdir):
    return {r["step"]: r["loss"] for r in read_metrics(workdir) if "loss" in r}


def test_sharded_8_devices_equal_1_device(reference_runs):
    """The same steps on one device and on a (data=2, fsdp=2, tensor=2) mesh: same losses, sharded params."""
    one, eight = reference_runs.workdir(1), reference_runs.workdir(8)
    a, b = _losses(one), _losses(eight)
    assert a.keys() == b.keys() == {1, 2, 3, 4}
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-5 * abs(a[step]), (step, a[step], b[step])
    exp = train.build_experiment(reference_runs.config(8))
    query = exp.state_sharding.params["bridgetower"]["text_model"]["layer_0"]["attention"]["attn"]["query"]["kernel"]
    assert tuple(query.spec) == ("fsdp", "tensor", None)          # (embed, heads, kv)
    word = exp.state_sharding.params["bridgetower"]["text_model"]["embeddings"]["word_embeddings"]["embedding"]
    assert tuple(word.spec) == (None, "fsdp")                     # (vocab rows, embed)
    mu = exp.state_sharding.opt_state[0].mu["bridgetower"]["text_model"]["layer_0"]["ffn"]["intermediate"]["kernel"]
    assert tuple(mu.spec) == ("fsdp", "tensor")                   # optimizer state sharded like its parameter
    restored = TrainCheckpointer(eight).restore(4, train.state_target(exp))
    kernel = restored.params["bridgetower"]["text_model"]["layer_0"]["ffn"]["intermediate"]["kernel"]
    blocks = {tuple((i.start, i.stop) for i in shard.index) for shard in kernel.addressable_shards}
    assert len(blocks) == 4                                        # really split 2 x 2
    pa, pb = _params(one, reference_runs.config(1)), jax.device_get(restored.params)
    # Adam moves every weight by ~lr (1e-3) a step; a real divergence would show at that scale.
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=0, atol=1e-4), pa, pb)
    # The 8-device checkpoint restores onto a 1-device mesh unchanged.
    onto_one = TrainCheckpointer(eight).restore(4, train.state_target(train.build_experiment(reference_runs.config(1))))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(onto_one.params), pb)


def test_resume_equals_uninterrupted_run(reference_runs, tmp_path):
    """4 steps straight == 2 steps, stop, resume to 4 (same losses, parameters and data order)."""
    straight = reference_runs.workdir(1)
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    # Make the copy look like a run that was stopped right after its step-2 checkpoint.
    shutil.rmtree(resumed / "checkpoints" / "4")
    records = [r for r in read_metrics(resumed) if r["step"] <= 2]
    (resumed / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = reference_runs.config(1)
    train.train_and_evaluate(cfg, str(resumed))
    assert _losses(straight) == _losses(resumed)
    jax.tree.map(np.testing.assert_array_equal, _params(straight, cfg), _params(resumed, cfg))


@pytest.mark.slow
def test_gradient_accumulation_matches_full_batch(demo_data, tmp_path):
    # Without dropout: microbatches draw their own dropout masks, a full batch one.
    no_dropout = {"eval.spec": "", "model.text.hidden_dropout_prob": 0.0,
                  "model.text.attention_probs_dropout_prob": 0.0}
    full = tiny_config(vqa, *demo_data, total_steps=2, **no_dropout)
    accumulated = tiny_config(vqa, *demo_data, total_steps=2, **{**no_dropout, "optim.grad_accum_steps": 4})
    train.train_and_evaluate(full, str(tmp_path / "full"))
    train.train_and_evaluate(accumulated, str(tmp_path / "accum"))
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "accum")
    assert a.keys() == b.keys()
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-4 * abs(a[step])


def test_pretraining_losses_fall_on_learnable_data(demo_data, tmp_path):
    cfg = tiny_config(pretrain, *demo_data, total_steps=60, checkpoint_every=60, **{"optim.warmup": 0.1})
    train.train_and_evaluate(cfg, str(tmp_path))
    records = [r for r in read_metrics(tmp_path) if "mlm_loss" in r]
    first, last = np.mean([r["mlm_loss"] for r in records[:5]]), np.mean([r["mlm_loss"] for r in records[-5:]])
    assert last < first - 1.0, (first, last)


def test_retrieval_rerank_sharing_vision_passes_gives_the_per_pair_scores(demo_data, monkeypatch):
    """The evaluation scores each short-listed pair through the vision tower once per image (segments
    of P texts); with P = 1 every pair has its own vision pass, as a plain ITM forward does."""
    from bridgetower_jax import evaluate
    from bridgetower_jax.metrics import retrieval
    cfg = tiny_config(retrieval_f30k, *demo_data)
    tokenizer = train.load_data_assets(cfg)
    exp = train.build_experiment(cfg)
    params = train.init_state(exp, jax.random.PRNGKey(3)).params
    chosen, scores = [], []
    cheapest = retrieval.cheapest_texts_per_image
    monkeypatch.setattr(retrieval, "cheapest_texts_per_image", lambda *a, **k: chosen.append(cheapest(*a, **k)) or chosen[-1])
    monkeypatch.setattr(retrieval, "recall_at_k", lambda s, t, recall=retrieval.recall_at_k: scores.append(s) or recall(s, t))
    shared = evaluate.evaluate_retrieval(exp, params, tokenizer, "f30k_karpathy:test")
    monkeypatch.setattr(retrieval, "cheapest_texts_per_image", lambda *a, **k: 1)
    per_pair = evaluate.evaluate_retrieval(exp, params, tokenizer, "f30k_karpathy:test")
    assert chosen[0] > 1
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-5)
    assert (scores[0] > retrieval.NOT_RERANKED).sum() > scores[0].shape[0] * cfg.eval.k_test   # both shortlists
    assert shared.keys() == per_pair.keys()


def test_a_batch_every_process_holds_whole_lands_row_for_row_on_any_mesh():
    from jax.sharding import Mesh
    from bridgetower_jax import sharding
    devices = np.asarray(jax.devices())[[5, 2, 7, 0, 3, 6, 1, 4]].reshape(4, 2, 1)   # not in device order
    mesh = Mesh(devices, sharding.MESH_AXES)
    whole = {"x": np.arange(16 * 3, dtype=np.float32).reshape(16, 3), "i": np.arange(8, dtype=np.int32)}
    batch = sharding.global_batch_from_whole(whole, mesh)
    for key, value in whole.items():
        np.testing.assert_array_equal(np.asarray(batch[key]), value)
        assert batch[key].sharding.spec[0] == sharding.BATCH_AXES and len(batch[key].addressable_shards) == 8


@pytest.mark.slow   # (ITC is off in every recipe; the vision pass it shares is checked in test_model_structure)
def test_pretraining_loss_with_itc(demo_data):
    """objectives.itc > 0: ITC over the global batch, on the image states of the MLM / ITM vision pass
    (checked exactly in test_model_structure), added to the total, with finite gradients."""
    from bridgetower_jax import sharding, tasks
    from bridgetower_jax.data import pipeline
    cfg = tiny_config(pretrain, *demo_data, **{"objectives.itc": 1.0, "eval.spec": ""})
    tokenizer = train.load_data_assets(cfg)
    exp = train.build_experiment(cfg)
    params = train.init_state(exp, jax.random.PRNGKey(0)).params
    batch = next(pipeline.make_train_iterator("pretrain", cfg.data, cfg.data.data_dir, tokenizer, seed=0,
                                              process_index=0, process_count=1, batch_size=cfg.batch_size))
    with exp.context():
        (loss, metrics), grads = jax.jit(jax.value_and_grad(
            lambda p, b: tasks.loss_and_metrics(cfg, exp.model, p, b, jax.random.PRNGKey(1)), has_aux=True))(
                params, sharding.global_batch(batch, exp.mesh))
    assert metrics["itc_loss"] > 0
    assert float(loss) == pytest.approx(float(metrics["mlm_loss"] + metrics["itm_loss"] + metrics["itc_loss"]), rel=1e-5)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    assert sum(np.abs(np.asarray(g)).sum() for g in jax.tree.leaves(grads["itc_image_head"])) > 0


@pytest.mark.slow   # (the loss above, and the vision pass it shares in test_model_structure)
def test_pretraining_with_itc_trains(demo_data, tmp_path):
    """objectives.itc > 0 adds ITC over the global batch, on the image states of the MLM / ITM vision pass."""
    cfg = tiny_config(pretrain, *demo_data, total_steps=2, **{"objectives.itc": 1.0, "eval.spec": ""})
    train.train_and_evaluate(cfg, str(tmp_path))
    records = [r for r in read_metrics(tmp_path) if "loss" in r]
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert np.isfinite(r["itc_loss"]) and r["itc_loss"] > 0
        assert r["loss"] == pytest.approx(r["mlm_loss"] + r["itm_loss"] + r["itc_loss"], rel=1e-5)


def test_vqa_evaluation_scores_and_writes_answers_in_one_pass(demo_data, tmp_path, monkeypatch):
    """One pass over the split gives the VQA score and the submission; the submission's answers, scored
    against the split's soft targets, give that score. Test splits (no published answers): no score."""
    from pathlib import Path
    from bridgetower_jax import evaluate
    from bridgetower_jax.data import pipeline, sources
    cfg = tiny_config(vqa, *demo_data)
    tokenizer = train.load_data_assets(cfg)
    exp = train.build_experiment(cfg)
    params = train.init_state(exp, jax.random.PRNGKey(1)).params
    passes, make_eval_iterator = [], pipeline.make_eval_iterator
    monkeypatch.setattr(pipeline, "make_eval_iterator", lambda *a, **k: passes.append(k["spec"]) or make_eval_iterator(*a, **k))
    results = evaluate.evaluate(exp, params, tokenizer, "vqav2:val", out_dir=tmp_path)
    assert passes == ["vqav2:val"]
    vocabulary = sources.answer_vocabulary(cfg.data.data_dir, "vqav2")
    part = sources.open_split(cfg.data.data_dir, "vqav2", "val")
    truth = {int(r["question_id"]): dict(zip(r["answer_labels"], r["answer_scores"]))
             for r in (part.texts[i] for i in range(len(part.texts)))}
    submission = json.loads(Path(results["submission"]).read_text())
    assert sorted(s["question_id"] for s in submission) == sorted(truth)
    scores = [truth[s["question_id"]].get(vocabulary.index(s["answer"]), 0.0) for s in submission]
    assert np.mean(scores) == pytest.approx(results["vqa_score"], abs=1e-6)

    monkeypatch.setattr("bridgetower_jax.data.raw.arrow_tables.UNANSWERED_SPLITS", ("val",))
    unanswered = evaluate.evaluate(exp, params, tokenizer, "vqav2:val", out_dir=tmp_path / "test")
    assert "vqa_score" not in unanswered and json.loads(Path(unanswered["submission"]).read_text()) == submission


def test_best_evaluated_checkpoint_is_kept_and_evaluated_again(demo_data, tmp_path):
    """eval.keep_best: every evaluated step is checkpointed with its scores; the best one survives
    max_to_keep, is found again by a new checkpointer, and `evaluate --step best` restores it."""
    from bridgetower_jax import evaluate
    cfg = tiny_config(nlvr2, *demo_data, total_steps=6, checkpoint_every=100, max_to_keep=1, eval_every=2,
                      **{"eval.keep_best": "nlvr2_accuracy", "optim.lr": 3e-3})
    train.train_and_evaluate(cfg, str(tmp_path))
    scores = {r["step"]: r["eval/nlvr2_accuracy"] for r in read_metrics(tmp_path) if "eval/nlvr2_accuracy" in r}
    assert sorted(scores) == [2, 4, 6]
    best = max(scores, key=lambda step: (scores[step], step))           # the later one on a tie
    ckpt = TrainCheckpointer(tmp_path, best_metric="nlvr2_accuracy")
    assert ckpt.best_step() == best and sorted(ckpt.all_steps()) == sorted({best, 6})
    ckpt.close()
    again = evaluate.run(cfg, str(tmp_path), which="best")
    assert again["nlvr2_accuracy"] == pytest.approx(scores[best], abs=1e-6)
    assert json.loads((tmp_path / "eval_nlvr2_dev.json").read_text())["step"] == best
    with pytest.raises(ValueError, match=r"--step '3': use latest, best or one of the kept steps"):
        evaluate.run(cfg, str(tmp_path), which="3")


@pytest.mark.parametrize("keep_best", [pytest.param("", marks=pytest.mark.slow), "nlvr2_accuracy"])
def test_a_failed_final_evaluation_keeps_the_final_checkpoint(demo_data, tmp_path, monkeypatch, keep_best):
    cfg = tiny_config(nlvr2, *demo_data, total_steps=2, checkpoint_every=100, **{"eval.keep_best": keep_best})

    def out_of_memory(*args, **kwargs):
        raise MemoryError("RESOURCE_EXHAUSTED in the re-rank")
    monkeypatch.setattr(train, "_evaluate_and_log", out_of_memory)
    with pytest.raises(MemoryError):
        train.train_and_evaluate(cfg, str(tmp_path))
    assert TrainCheckpointer(tmp_path, read_only=True).latest_step() == 2


def test_evaluation_opens_checkpoints_read_only(tmp_path):
    """`evaluate` may run beside a training run in the same workdir: it creates, cleans up (Orbax would
    delete the trainer's checkpoint in flight) and saves nothing."""
    reader = TrainCheckpointer(tmp_path / "not_trained", read_only=True)
    assert reader.all_steps() == [] and not (tmp_path / "not_trained").exists()
    with pytest.raises(ValueError, match="opened read-only"):
        reader.save(1, {"w": np.ones(2, np.float32)}, None, {})
    reader.close()


def test_evaluation_interval_as_a_fraction_of_the_run():
    from ml_collections import ConfigDict
    for every, total, steps in ((0.0, 100, 0), (0.1, 100, 10), (1 / 30, 66_000, 2_200), (0.1, 4, 1), (5, 100, 5),
                                (0.1, 12_854, 1_286)):   # 9 periodic evaluations, then the final one
        assert train.eval_interval(ConfigDict({"eval_every": every, "total_steps": total})) == steps


def test_run_length_in_epochs_counts_the_built_data(demo_data, tmp_path):
    """total_steps = 0: ceil(epochs x examples / batch_size) steps, the examples being what one pass of
    the real training stream yields, and the learning-rate schedule spans exactly those steps."""
    import types
    from bridgetower_jax import optim
    from bridgetower_jax.data import pipeline, tokenizer as tokenizer_lib
    cfg = tiny_config(snli_ve, *demo_data, total_steps=0, **{"eval.spec": "", "data.datasets": ("snli_ve:train+dev",)})
    one_pass = pipeline.make_train_iterator(
        "snli_ve", types.SimpleNamespace(**cfg.data.to_dict(), num_epochs=1), cfg.data.data_dir,
        tokenizer_lib.load_tokenizer(cfg.data.tokenizer_dir), seed=0, process_index=0, process_count=1, batch_size=1)
    examples = sum(len(b["labels"]) for b in one_pass)
    assert pipeline.train_examples_per_epoch("snli_ve", cfg.data, cfg.data.data_dir) == examples > 20
    cfg.epochs = 2.5 * cfg.batch_size / examples          # 2.5 batches: the last one is partly a new epoch
    train.train_and_evaluate(cfg, str(tmp_path))
    assert cfg.total_steps == 3
    records = [r for r in read_metrics(tmp_path) if "loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3]
    np.testing.assert_allclose([r["epoch"] for r in records], [k * cfg.batch_size / examples for k in (1, 2, 3)])
    assert TrainCheckpointer(tmp_path).latest_step() == 3
    schedule = optim.make_optimizer(cfg.optim, 3)[1]
    np.testing.assert_allclose([r["lr"] for r in records], [float(schedule(k)) for k in range(3)], rtol=1e-6)
    # Resumed with another length (e.g. another batch size): the restore says so.
    from bridgetower_jax import resume
    lines, ckpt = [], TrainCheckpointer(tmp_path, read_only=True)
    cfg.total_steps = 5
    step, _ = resume.restore_newest_complete(ckpt, train.state_target(train.build_experiment(cfg)), None,
                                             cfg.to_dict(), lines.append)
    ckpt.close()
    assert step == 3 and any("config.total_steps=5 but the checkpoint's run had 3" in line for line in lines)


def test_total_steps_from_epochs_rounds_whole_batches_exactly():
    from ml_collections import ConfigDict
    for epochs, examples, batch, steps in ((0.1, 30, 1, 3), (5 * 8 / 1234, 1234, 8, 5), (2.5, 10, 4, 7), (1e-6, 10, 4, 1)):
        cfg = ConfigDict({"total_steps": 0, "epochs": epochs, "batch_size": batch, "task": "vqa",
                          "data": {"datasets": ("vqav2:train",)}})
        train.resolve_total_steps(cfg, examples, lambda line: None)
        assert cfg.total_steps == steps, (epochs, examples, batch)


def test_fine_tuning_recipes_are_given_in_epochs():
    for module, epochs in ((vqa, 10), (nlvr2, 10), (snli_ve, 5), (retrieval_f30k, 20)):
        base, tiny = module.get_config("base"), module.get_config("tiny")
        assert (base.total_steps, base.epochs) == (0, epochs)
        assert (tiny.total_steps, tiny.epochs) == (4, None)
    assert (pretrain.get_config("base").total_steps, pretrain.get_config("base").epochs) == (100_000, None)


# ---- clear errors before anything compiles --------------------------------------------------
def test_batch_not_divisible_by_mesh(demo_data):
    cfg = tiny_config(pretrain, *demo_data, batch_size=6, **{"mesh.num_devices": 4})
    with pytest.raises(ValueError, match=r"batch_size=6 must be divisible .* mesh.data\*mesh.fsdp \(4\)"):
        train.build_experiment(cfg)


def test_mesh_larger_than_devices(demo_data):
    cfg = tiny_config(pretrain, *demo_data, **{"mesh.num_devices": 0, "mesh.data": 4, "mesh.fsdp": 4})
    with pytest.raises(ValueError, match=r"mesh.data\*mesh.fsdp\*mesh.tensor = 16 .* 8 devices"):
        train.build_experiment(cfg)
    cfg = tiny_config(pretrain, *demo_data, **{"mesh.num_devices": 16})
    with pytest.raises(ValueError, match="mesh.num_devices=16"):
        train.build_experiment(cfg)


def test_tokenizer_larger_than_model_vocabulary(demo_data):
    cfg = tiny_config(pretrain, *demo_data, **{"model.text.vocab_size": 100})
    with pytest.raises(ValueError, match="config.model.text.vocab_size=100"):
        train.load_data_assets(cfg)


def test_unknown_config_key_on_the_command_line(demo_data, tmp_path):
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "bridgetower_jax.train", "--config", "configs/pretrain.py:tiny",
                             "--workdir", str(tmp_path), "--config.optim.learning_rate=0.1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "learning_rate" in result.stderr
