"""Reliability under faults: SIGKILL, SIGTERM, interrupted and damaged checkpoints, NaN, bad input.

Training runs are real `python -m bridgetower_jax.train` subprocesses on one CPU device, with
faults injected through BRIDGETOWER_FAULTS (bridgetower_jax/faults.py). Every run here compiles
the same train step (faults and policies are host-side), so they share a persistent XLA cache and
only the first one pays for compilation.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from bridgetower_jax import faults, nonfinite, resume, validation
from bridgetower_jax.checkpoint import TrainCheckpointer
from bridgetower_jax.data import pipeline, tokenizer as tokenizer_lib
from bridgetower_jax.data.bad_records import BadRecordError
from bridgetower_jax.metric_writer import read_metrics
from bridgetower_jax.preemption import EXIT_PREEMPTED

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL, EVERY = 6, 2
CURVE_KEYS = ("loss", "mlm_loss", "itm_loss", "grad_norm", "lr", "nonfinite_steps")


# ---- running the trainer --------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_env(tmp_path_factory):
    env = dict(os.environ)
    env.pop(faults.ENV, None)
    env.update(JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("xla_cache")),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
               # One device, and cheap LLVM codegen: these runs are about control flow, not speed.
               XLA_FLAGS="--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0 "
                         "--xla_llvm_disable_expensive_passes=true")
    return env


def train(workdir, demo_data, run_env, *overrides, fault="", timeout=600) -> subprocess.CompletedProcess:
    data_dir, tok_dir = demo_data
    argv = [sys.executable, "-m", "bridgetower_jax.train", "--config", "configs/pretrain.py:tiny",
            "--workdir", str(workdir), f"--config.data.data_dir={data_dir}",
            f"--config.data.tokenizer_dir={tok_dir}", f"--config.total_steps={TOTAL}",
            f"--config.checkpoint_every={EVERY}", "--config.log_every=1", "--config.mesh.num_devices=1",
            *overrides]
    env = {**run_env, faults.ENV: fault} if fault else run_env
    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    result.log = result.stdout + result.stderr
    return result


def ok(result) -> None:
    assert result.returncode == 0, result.log[-4000:]


@pytest.fixture(scope="module")
def reference(demo_data, run_env, tmp_path_factory):
    """An uninterrupted run: the result every interrupted run must reproduce."""
    workdir = tmp_path_factory.mktemp("reference")
    ok(train(workdir, demo_data, run_env))
    return workdir


# ---- reading what a run left ----------------------------------------------------------------
def steps_on_disk(workdir) -> list[int]:
    return sorted(int(p) for p in os.listdir(os.path.join(workdir, "checkpoints")) if p.isdigit())


def saved_state(workdir, step) -> dict:
    """{'params/...': array} of a checkpoint's train state, read on the host."""
    import jax
    with ocp.StandardCheckpointer() as reader:
        state = reader.restore(os.path.join(str(workdir), "checkpoints", str(step), "state"))
    return {"/".join(resume._key_name(k) for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]}


def curve(workdir) -> list[dict]:
    return [{k: r[k] for k in ("step", *CURVE_KEYS) if k in r} for r in read_metrics(workdir) if "loss" in r]


def assert_same_run(workdir, reference) -> None:
    """Bitwise the same final state and the same per-step losses as the reference run."""
    assert curve(workdir) == curve(reference)
    assert [r["step"] for r in curve(workdir)] == list(range(1, TOTAL + 1))
    final, expected = saved_state(workdir, TOTAL), saved_state(reference, TOTAL)
    assert final.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(final[key], expected[key], err_msg=key)


def assert_all_checkpoints_finite(workdir) -> None:
    for step in steps_on_disk(workdir):
        for key, value in saved_state(workdir, step).items():
            assert np.all(np.isfinite(value)), (step, key)


# ---- SIGKILL and SIGTERM --------------------------------------------------------------------
def test_sigkill_at_three_points_then_resume_equals_uninterrupted_run(demo_data, run_env, reference, tmp_path):
    # 1. between checkpoints: step 3 ran, checkpoint 2 is the newest.
    result = train(tmp_path, demo_data, run_env, fault="sigkill_after_step@3")
    assert result.returncode == -9, result.log[-3000:]
    assert steps_on_disk(tmp_path) == [2]
    # 2. in the middle of writing checkpoint 4: resumes from 2, dies with 4 half-written.
    result = train(tmp_path, demo_data, run_env, fault="sigkill_in_save@4")
    assert result.returncode == -9, result.log[-3000:]
    assert "resuming from" in result.log and result.log.count("/checkpoints/2") >= 1
    assert steps_on_disk(tmp_path) == [2]
    assert glob.glob(str(tmp_path / "checkpoints" / "4.orbax-checkpoint-tmp*")), "no interrupted write of step 4"
    # 3. right after resuming from 2 again, the half-written 4 ignored: dies after step 5 (4 now complete).
    result = train(tmp_path, demo_data, run_env, fault="sigkill_after_step@5")
    assert result.returncode == -9, result.log[-3000:]
    assert re.search(r"ignoring the interrupted checkpoint write .*4\.orbax-checkpoint-tmp", result.log)
    assert re.search(r"resuming from \S*/checkpoints/2\b", result.log)
    assert steps_on_disk(tmp_path) == [2, 4]
    # The same command once more finishes the run.
    result = train(tmp_path, demo_data, run_env)
    ok(result)
    assert re.search(r"resuming from \S*/checkpoints/4\b", result.log)
    assert not glob.glob(str(tmp_path / "checkpoints" / "*.orbax-checkpoint-tmp*"))
    assert_same_run(tmp_path, reference)


def test_sigterm_checkpoints_exits_75_and_the_same_command_resumes(demo_data, run_env, reference, tmp_path):
    result = train(tmp_path, demo_data, run_env, fault="sigterm_after_step@3")
    assert result.returncode == EXIT_PREEMPTED, result.log[-3000:]
    assert "SIGTERM received" in result.log
    assert re.search(r"preempted \(SIGTERM\): stopped after step 3 with a complete checkpoint in \S*/checkpoints/3",
                     result.log)
    assert "Traceback" not in result.log
    assert steps_on_disk(tmp_path) == [2, 3]
    assert TrainCheckpointer(tmp_path).all_steps() == [2, 3]   # committed, not just present
    result = train(tmp_path, demo_data, run_env)
    ok(result)
    assert re.search(r"resuming from \S*/checkpoints/3\b", result.log)
    assert "step 4/6" in result.log and "step 3/6" not in result.log
    assert_same_run(tmp_path, reference)


# ---- restarting: the compilation cache ----------------------------------------------------------
def test_a_second_run_loads_its_programs_from_the_compilation_cache(demo_data, run_env, tmp_path):
    cache = tmp_path / "xla_cache"
    short = (f"--config.compilation_cache_dir={cache}", "--config.total_steps=2", "--config.eval.spec=")
    first = train(tmp_path / "first", demo_data, run_env, *short)
    ok(first)
    pattern = r"compilation cache (\S+): (\d+) program\(s\) loaded \(\d+ s of compilation saved\), (\d+) written"
    line = re.search(pattern, first.log)
    assert line and line.group(1) == str(cache), first.log[-3000:]
    written = int(line.group(3))
    assert written >= 1 and len(os.listdir(cache)) >= written
    second = train(tmp_path / "second", demo_data, run_env, *short)
    ok(second)
    line = re.search(pattern, second.log)
    # What the first run wrote (the train step among it) is loaded; nothing by then is compiled again.
    assert line and int(line.group(2)) >= written and int(line.group(3)) == 0, second.log[-3000:]
    # Loaded programs compute what compiled ones do.
    assert curve(tmp_path / "second") == curve(tmp_path / "first") and len(curve(tmp_path / "first")) == 2


def test_compilation_cache_setting(monkeypatch, tmp_path):
    import jax
    from bridgetower_jax import compile_cache, native
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "from_env"))
    assert compile_cache.resolve("auto") == str(tmp_path / "from_env")
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    auto = compile_cache.resolve("auto")       # one directory per CPU type: XLA:CPU code is built for it
    assert os.path.dirname(auto) == str(native.cache_dir() / "jax_compilation") and auto == compile_cache.resolve("auto")
    assert compile_cache.resolve("~/c") == os.path.expanduser("~/c")
    assert compile_cache.resolve("gs://bucket/c") == "gs://bucket/c"
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match=r"config\.compilation_cache_dir: cannot create .*a_file/cache"):
        compile_cache.enable(str(tmp_path / "a_file" / "cache"))

    before = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    x = jax.numpy.ones(3)

    def compile_one(scale):      # a program nothing has compiled before
        jax.jit(lambda x: x * scale + 1.0)(x).block_until_ready()

    def entries(name):
        return sorted(f for f in os.listdir(tmp_path / name) if f.endswith("-cache"))
    try:
        # Switching directories in one process reopens the cache at the new place; "" turns it off.
        assert compile_cache.enable(str(tmp_path / "a")) == str(tmp_path / "a")
        compile_one(3.0)
        assert len(entries("a")) == 1 and compile_cache.summary().endswith(": 0 program(s) loaded "
                                                                            "(0 s of compilation saved), 1 written")
        compile_cache.enable(str(tmp_path / "b"))
        compile_one(5.0)
        assert len(entries("a")) == 1 and len(entries("b")) == 1 and "1 written" in compile_cache.summary()
        assert compile_cache.enable("") is None and compile_cache.summary() == "compilation cache off"
        compile_one(7.0)
        assert len(entries("a")) == len(entries("b")) == 1
        # The size cap (JAX's LRU eviction) only on the project's own directory, where every writer sets it.
        assert jax.config.jax_compilation_cache_max_size == -1
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert compile_cache.enable("auto").startswith(str(tmp_path / "xdg"))
        assert jax.config.jax_compilation_cache_max_size == compile_cache.MAX_BYTES
    finally:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        compile_cache.enable(before[0] or "")
        assert jax.config.jax_compilation_cache_max_size == -1


# ---- damaged checkpoints and checkpoints of another model ------------------------------------
@pytest.mark.slow
def test_damaged_newest_checkpoint_is_skipped_and_moved_aside(demo_data, run_env, reference, tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(reference, workdir)
    data_files = [p for p in glob.glob(str(workdir / "checkpoints" / str(TOTAL) / "state" / "**"), recursive=True)
                  if os.path.isfile(p) and "/d/" in p]
    assert data_files
    for path in data_files:   # a partial copy: the array data cut short
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    result = train(workdir, demo_data, run_env)
    ok(result)
    assert re.search(rf"skipping checkpoint \S*/checkpoints/{TOTAL}: it cannot be restored", result.log)
    assert re.search(rf"resuming from \S*/checkpoints/{TOTAL - EVERY}\b", result.log)
    assert glob.glob(str(workdir / "checkpoints" / f"{TOTAL}.incomplete-*"))
    assert_same_run(workdir, reference)


def test_checkpoint_of_another_architecture_names_the_differences(demo_data, run_env, reference, tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(reference, workdir)
    result = train(workdir, demo_data, run_env, "--config.model.text.intermediate_size=128", timeout=300)
    assert result.returncode == resume.ArchitectureMismatch.exit_code, result.log[-3000:]
    assert "Traceback" not in result.log
    assert "was written for another architecture than this config" in result.log
    assert "config.model.text.intermediate_size: checkpoint 64, config 128" in result.log
    assert re.search(r"shape differs \(\d+\): params/\S+/intermediate/bias: checkpoint \(64,\), model \(128,\)",
                     result.log)
    assert steps_on_disk(workdir) == steps_on_disk(reference)   # nothing moved


def test_no_restorable_checkpoint_raises_and_moves_nothing(tmp_path):
    ckpt = TrainCheckpointer(tmp_path, asynchronous=False)
    ckpt.save(1, {"w": np.ones(3, np.float32)}, None, {"model": {}})
    ckpt.wait()
    for path in glob.glob(str(tmp_path / "checkpoints" / "1" / "state" / "**"), recursive=True):
        if os.path.isfile(path) and "/d/" in path:
            os.remove(path)
    import jax
    target = {"w": jax.ShapeDtypeStruct((3,), np.float32)}
    with pytest.raises(resume.NoRestorableCheckpoint, match="nothing was moved"):
        resume.restore_newest_complete(ckpt, target, None, {"model": {}}, report=lambda _: None)
    assert steps_on_disk(tmp_path) == [1]
    ckpt.close()


# ---- non-finite loss ------------------------------------------------------------------------
def test_nan_halt_names_the_step_and_batch_and_saves_nothing_after(demo_data, run_env, tmp_path):
    result = train(tmp_path, demo_data, run_env, fault="nan_batch@3")
    assert result.returncode == nonfinite.EXIT_NONFINITE, result.log[-3000:]
    assert "non-finite loss or gradients at step 3 (loss nan" in result.log
    assert "data iterator state before it was {'next_index': 16}" in result.log   # batch 3 of 8 examples
    assert steps_on_disk(tmp_path) == [2]
    assert_all_checkpoints_finite(tmp_path)


def test_nan_skip_leaves_the_state_unchanged_and_counts(demo_data, run_env, tmp_path):
    result = train(tmp_path, demo_data, run_env, "--config.nonfinite=skip", "--config.checkpoint_every=1",
                   "--config.max_to_keep=10", fault="nan_batch@3")
    ok(result)
    assert re.search(r"skipped the update of step 3 \(loss nan.*1 step\(s\) skipped so far", result.log)
    records = {r["step"]: r for r in read_metrics(tmp_path) if "loss" in r}
    assert records[3]["loss"] == "nan" and records[3]["skipped"] == 1
    assert [records[s]["nonfinite_steps"] for s in range(1, TOTAL + 1)] == [0, 0, 1, 1, 1, 1]
    assert all(isinstance(records[s]["loss"], float) for s in (4, 5, 6))   # training went on
    before, after = saved_state(tmp_path, 2), saved_state(tmp_path, 3)
    for key in before:
        if key not in ("step", "nonfinite_steps"):
            np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    assert after["nonfinite_steps"] == 1 and after["step"] == 3
    # The logged learning rate is the one applied: the schedule counts applied updates (2 after step 3).
    counts = {key: int(value) for key, value in after.items() if key.endswith("count")}
    assert counts and set(counts.values()) == {2}, counts
    lrs = [records[s]["lr"] for s in range(1, TOTAL + 1)]
    assert lrs[3] == lrs[2] and len(set(lrs)) == TOTAL - 1, lrs
    assert_all_checkpoints_finite(tmp_path)


def test_a_non_finite_state_is_never_saved(tmp_path):
    ckpt = TrainCheckpointer(tmp_path, asynchronous=False)
    state = {"params": {"w": np.array([1.0, np.nan], np.float32), "b": np.zeros(2, np.float32)}}
    with pytest.raises(nonfinite.NonFiniteHalt, match=r"refusing to save the checkpoint of step 5.*\['params'\]\['w'\]"):
        ckpt.save(5, state, None, {})
    ckpt.close()
    assert steps_on_disk(tmp_path) == []


def test_update_if_finite_applies_finite_steps_and_keeps_the_state_otherwise():
    import jax
    import jax.numpy as jnp
    import optax
    tx = optax.adamw(0.1, weight_decay=0.01)
    params = {"w": jnp.arange(4.0).reshape(2, 2), "b": jnp.ones(2)}
    opt_state = tx.init(params)
    grads = {"w": jnp.full((2, 2), 0.5), "b": jnp.array([1.0, -1.0])}
    step = jax.jit(lambda g, s, p, loss: nonfinite.update_if_finite(tx, g, s, p, loss, optax.tree.norm(g)))
    updates, want_state = tx.update(grads, opt_state, params)
    new_params, new_state, skipped = step(grads, opt_state, params, jnp.float32(1.0))
    assert int(skipped) == 0
    jax.tree.map(np.testing.assert_allclose, (new_params, new_state), (optax.apply_updates(params, updates), want_state))
    # A finite loss with an infinite gradient entry, and a NaN loss with finite gradients: nothing moves.
    for bad_grads, loss in (({**grads, "b": jnp.array([jnp.inf, 0.0])}, 1.0), (grads, jnp.nan)):
        kept_params, kept_state, skipped = step(bad_grads, opt_state, params, jnp.float32(loss))
        assert int(skipped) == 1
        jax.tree.map(np.testing.assert_array_equal, (kept_params, kept_state), (params, opt_state))


# ---- bad images during training -------------------------------------------------------------
@pytest.mark.slow
def test_skipped_bad_images_are_counted_in_the_trainer_metrics(demo_data, run_env, tmp_path):
    result = train(tmp_path, demo_data, run_env, "--config.data.skip_bad_records=True",
                   fault="bad_images_below@10")
    ok(result)
    counts = [r["bad_images"] for r in read_metrics(tmp_path) if "bad_images" in r]
    assert counts and counts[-1] > 0 and counts == sorted(counts)


def test_an_undecodable_image_names_the_record(demo_data, monkeypatch):
    data_dir, tok_dir = demo_data
    monkeypatch.setenv(faults.ENV, "bad_images_below@1000")
    faults._planned.cache_clear()
    try:
        from configs import pretrain
        cfg = pretrain.get_config("tiny").data
        tokenizer = tokenizer_lib.load_tokenizer(tok_dir)
        it = pipeline.make_train_iterator("pretrain", cfg, data_dir, tokenizer, seed=0, process_index=0,
                                          process_count=1, batch_size=4)
        with pytest.raises(BadRecordError, match=r"cannot decode image \S+ \(image \d+ of coco_karpathy:train\)"):
            next(it)
    finally:
        monkeypatch.delenv(faults.ENV)
        faults._planned.cache_clear()


def test_a_fault_can_be_aimed_at_one_process(monkeypatch):
    """`KIND@STEP:P` fires only in process P (the multi-host preemption test sends SIGTERM to one host)."""
    try:
        for spec, expected in (("sigterm_after_step@2:1,nan_batch@3", (False, True)),
                               ("sigterm_after_step@2:0", (True, False))):
            monkeypatch.setenv(faults.ENV, spec)
            faults._planned.cache_clear()
            assert (faults.planned("sigterm_after_step", 2), faults.planned("nan_batch", 3)) == expected, spec
        for bad in ("sigterm_after_step@2:one", "sigterm_after_step@2:", "sigterm_after_step@\u00b2"):
            monkeypatch.setenv(faults.ENV, bad)
            faults._planned.cache_clear()
            with pytest.raises(ValueError, match="KIND@STEP:PROCESS"):
                faults.planned("sigterm_after_step", 2)
        monkeypatch.setenv(faults.ENV, "bad_images_below@5:1")
        faults._planned.cache_clear()
        with pytest.raises(ValueError, match="cannot be aimed at one process"):
            faults.image_bytes(0, b"")
    finally:
        monkeypatch.delenv(faults.ENV)
        faults._planned.cache_clear()


# ---- configs checked before anything compiles ------------------------------------------------
def tiny(demo_data, **overrides):
    from train_fixtures import tiny_config
    from configs import pretrain
    return tiny_config(pretrain, *demo_data, **overrides)


def test_image_size_not_a_multiple_of_patch_size(demo_data):
    with pytest.raises(ValueError, match=r"config.model.vision.image_size=64 is not a multiple of "
                                         r"config.model.vision.patch_size=15"):
        validation.validate_config(tiny(demo_data, **{"model.vision.patch_size": 15}))


def test_missing_split_or_dataset_names_the_config_key(demo_data):
    with pytest.raises(ValueError, match=r"config.data.datasets names 'coco_karpathy:trian'.*has no split 'trian'"):
        validation.validate_config(tiny(demo_data, **{"data.datasets": ("coco_karpathy:trian",)}))
    with pytest.raises(FileNotFoundError, match=r"config.eval.spec names 'sbu:val'.*bridgetower_jax.data.build sbu"):
        validation.validate_config(tiny(demo_data, **{"eval.spec": "sbu:val"}))
    with pytest.raises(ValueError, match=r"config.data.datasets names 'vqav2:train', a vqa dataset; task pretrain "
                                         r"reads captions datasets \(coco_karpathy, "):
        validation.validate_config(tiny(demo_data, **{"data.datasets": ("coco_karpathy:train", "vqav2:train")}))


def test_unknown_policy_and_loop_settings(demo_data):
    with pytest.raises(ValueError, match=r"config.nonfinite='ignore' must be one of \('halt', 'skip'\)"):
        validation.validate_config(tiny(demo_data, nonfinite="ignore"))
    with pytest.raises(ValueError, match=r"config.checkpoint_every=0 must be >= 1"):
        validation.validate_config(tiny(demo_data, checkpoint_every=0))
    with pytest.raises(ValueError, match=r"config.optim.eps=0.0 must be > 0"):
        validation.validate_config(tiny(demo_data, **{"optim.eps": 0.0}))
    with pytest.raises(ValueError, match=r"config.total_steps=0, config.epochs=None: set total_steps >= 1, or "
                                         r"total_steps=0 and epochs > 0"):
        validation.validate_config(tiny(demo_data, total_steps=0))
    with pytest.raises(ValueError, match=r"config.total_steps=-5"):
        validation.validate_config(tiny(demo_data, total_steps=-5, epochs=1.0))
    with pytest.raises(ValueError, match=r"config.eval.keep_best='nlvr2_accuracy' is not a score of task pretrain "
                                         r"\(one of mlm_accuracy, itm_accuracy"):
        validation.validate_config(tiny(demo_data, **{"eval.keep_best": "nlvr2_accuracy"}))
    with pytest.raises(ValueError, match=r"config.eval.keep_best='mlm_accuracy' needs config.eval.spec"):
        validation.validate_config(tiny(demo_data, **{"eval.keep_best": "mlm_accuracy", "eval.spec": ""}))
    from configs import vqa
    from train_fixtures import tiny_config
    with pytest.raises(ValueError, match=r"config.eval.keep_best='vqa_score': config.eval.spec='vqav2:test_dev' "
                                         r"has no published answers"):
        validation._check_evaluation(tiny_config(vqa, *demo_data, **{"eval.keep_best": "vqa_score",
                                                                     "eval.spec": "vqav2:test_dev"}))
    with pytest.raises(ValueError, match=r"'vqav2:val\+test_dev' mixes splits with answers and without \(test_dev\)"):
        validation._check_evaluation(tiny_config(vqa, *demo_data, **{"eval.keep_best": "vqa_score",
                                                                     "eval.spec": "vqav2:val+test_dev"}))
    for every in (-1.0, 1.5):
        with pytest.raises(ValueError, match=rf"config.eval_every={every}: 0 \(at the end only\), a fraction"):
            validation.validate_config(tiny(demo_data, eval_every=every))


def test_unusable_directories_are_named_before_anything_runs(demo_data, tmp_path, monkeypatch):
    from bridgetower_jax import train
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match=r"--workdir: cannot create .*a_file/run .*; fix the path$"):
        train.train_and_evaluate(tiny(demo_data), str(tmp_path / "a_file" / "run"))
    with pytest.raises(ValueError, match=r"config.data.tokenizer_dir='gs://b/tok': the tokenizer is read from a "
                                         r"local directory"):
        train.load_data_assets(tiny(demo_data, **{"data.tokenizer_dir": "gs://b/tok"}))
    # gs:// data is read through etils.epath, which needs gcsfs (hidden here: no bucket is reached).
    monkeypatch.setitem(sys.modules, "gcsfs", None)
    with pytest.raises(ValueError, match=r"config.data.data_dir: cannot read gs://b/data .*install gcsfs"):
        train.load_data_assets(tiny(demo_data, **{"data.data_dir": "gs://b/data"}))


def test_unknown_override_key_is_named_by_the_command_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bridgetower_jax.train", "--config", "configs/pretrain.py:tiny",
                             "--workdir", str(tmp_path), "--config.optim.lr_warmup=0.1"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "optim.lr_warmup" in result.stderr or "lr_warmup" in result.stderr
