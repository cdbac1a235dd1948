"""The README's main job: the whole project on procedurally drawn data, on a laptop CPU.

    python -m bridgetower_jax.demo --workdir DIR

1. draws the demo corpus in the real raw formats (COCO captions, VQAv2 questions) and builds a
   byte-level BPE tokenizer and the ArrayRecord datasets with the real builders;
2. pre-trains a small BridgeTower with MLM + ITM (configs/pretrain.py:demo);
3. fine-tunes it on demo VQA from the pre-trained parameters (configs/vqa.py:demo, init_from);
4. evaluates held-out VQA against the majority-answer baseline;
5. exports the pre-trained model to transformers (BridgeTowerForMaskedLM) and checks that PyTorch
   reproduces the Flax outputs;
and writes DIR/report.json.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

flags.DEFINE_string("workdir", None, "output directory (data, checkpoints, report.json)")
flags.DEFINE_integer("images", 1500, "demo images to draw (held-out questions use their own images)")
flags.DEFINE_integer("pretrain_steps", 0, "override configs/pretrain.py:demo total_steps (0 = keep)")
flags.DEFINE_integer("vqa_steps", 0, "override configs/vqa.py:demo total_steps (0 = keep)")

log = logging.getLogger("bridgetower_jax")


def _run(*args: str) -> None:
    """A data-preparation command, exactly as a user would type it."""
    subprocess.run([sys.executable, "-m", *args], check=True, stdout=subprocess.DEVNULL)


def prepare_data(root: Path, images: int) -> tuple[Path, Path]:
    raw, data, tok = root / "raw", root / "data", root / "tokenizer"
    if not (data / "vqav2").exists():
        _run("bridgetower_jax.data.demo", "--out", str(raw), "--coco_images", str(images),
             "--flickr_images", "10", "--nlvr2_pairs", "10", "--image_size", "64")
        _run("bridgetower_jax.data.tokenizer", "--corpus", str(raw / "corpus.txt"), "--out", str(tok),
             "--vocab_size", "1000")
        _run("bridgetower_jax.data.build", "coco_karpathy", "--manual_dir", str(raw / "coco"), "--data_dir", str(data))
        _run("bridgetower_jax.data.build", "vqav2", "--manual_dir", str(raw / "coco"), "--data_dir", str(data),
             "--min_answer_count", "1")
    return data, tok


def majority_baseline(data_dir: Path) -> float:
    """VQA score of always answering the most frequent training answer."""
    import numpy as np
    from bridgetower_jax.data import sources
    train, val = sources.open_split(str(data_dir), "vqav2", "train"), sources.open_split(str(data_dir), "vqav2", "val")
    counts = {}
    for i in range(len(train.texts)):
        labels = np.asarray(train.texts[i]["answer_labels"]).ravel()
        scores = np.asarray(train.texts[i]["answer_scores"]).ravel()
        if len(labels):
            best = int(labels[np.argmax(scores)])
            counts[best] = counts.get(best, 0) + 1
    majority = max(counts, key=counts.get)
    total = 0.0
    for i in range(len(val.texts)):
        labels = np.asarray(val.texts[i]["answer_labels"]).ravel()
        scores = np.asarray(val.texts[i]["answer_scores"]).ravel()
        total += float(scores[labels == majority].sum()) if len(labels) else 0.0
    return total / max(len(val.texts), 1)


def export_and_compare(params_dir: Path, out_dir: Path, data_dir: Path, tok_dir: Path) -> float:
    """Export to transformers and return max |Flax - PyTorch| of the MLM logits on a demo batch."""
    import jax.numpy as jnp
    import numpy as np
    import torch
    import transformers
    from bridgetower_jax import checkpoint, convert
    from bridgetower_jax.data import pipeline, tokenizer as tokenizer_lib
    from configs.pretrain import get_config

    config, params, heads = checkpoint.load_params(params_dir)
    convert.to_pytorch(config, params, out_dir, head="mlm")
    hf = transformers.BridgeTowerForMaskedLM.from_pretrained(out_dir).eval()
    cfg = get_config("demo")
    cfg.data.data_dir, cfg.data.tokenizer_dir = str(data_dir), str(tok_dir)
    batch = next(pipeline.make_eval_iterator("pretrain", cfg.data, str(data_dir),
                                             tokenizer_lib.load_tokenizer(str(tok_dir)), spec="coco_karpathy:val",
                                             process_index=0, process_count=1, batch_size=4))
    model = convert.flax_model_for(config, heads)
    ids, mask, pixels = batch["input_ids"], batch["attention_mask"], batch["pixel_values"]
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(pixels),
                                  method=type(model).mlm))
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                    pixel_values=torch.tensor(pixels).permute(0, 3, 1, 2)).logits.numpy()
    return float(np.abs(ours - theirs).max())


def run_demo(workdir: Path, images: int, pretrain_steps: int = 0, vqa_steps: int = 0) -> dict:
    import jax
    from bridgetower_jax import checkpoint, tasks, train
    from bridgetower_jax.metric_writer import read_metrics
    from configs import pretrain, vqa

    start = time.time()
    workdir.mkdir(parents=True, exist_ok=True)
    log.info("demo: drawing data, building tokenizer and datasets")
    data_dir, tok_dir = prepare_data(workdir, images)

    def configured(module, steps):
        cfg = module.get_config("demo")
        cfg.data.data_dir, cfg.data.tokenizer_dir = str(data_dir), str(tok_dir)
        if steps:
            cfg.total_steps = steps
        return cfg

    log.info("demo: pre-training (MLM + ITM)")
    pre_cfg = configured(pretrain, pretrain_steps)
    train.train_and_evaluate(pre_cfg, str(workdir / "pretrain"))
    pre_metrics = [m for m in read_metrics(workdir / "pretrain") if "mlm_loss" in m]

    params_dir = workdir / "pretrained_params"
    if not params_dir.exists():
        exp = train.build_experiment(pre_cfg)
        ckpt = checkpoint.TrainCheckpointer(workdir / "pretrain")
        state = ckpt.restore(ckpt.latest_step(), train.state_target(exp))
        ckpt.close()
        checkpoint.save_params(params_dir, tasks.model_config(pre_cfg), jax.device_get(state.params), ("mlm", "itm"))

    log.info("demo: fine-tuning on VQA from the pre-trained parameters")
    vqa_cfg = configured(vqa, vqa_steps)
    vqa_cfg.init_from = str(params_dir)
    vqa_final = train.train_and_evaluate(vqa_cfg, str(workdir / "vqa"))

    log.info("demo: exporting to transformers and comparing outputs")
    max_diff = export_and_compare(params_dir, workdir / "hf_export", data_dir, tok_dir)
    report = {
        "vqa_score_heldout": vqa_final.get("eval/vqa_score"),
        "vqa_majority_baseline": majority_baseline(data_dir),
        "pretrain_first_losses": {k: pre_metrics[0][k] for k in ("loss", "mlm_loss", "itm_loss")},
        "pretrain_last_losses": {k: pre_metrics[-1][k] for k in ("loss", "mlm_loss", "itm_loss")},
        "flax_vs_pytorch_max_abs_diff": max_diff,
        "pytorch_export": str(workdir / "hf_export"),
        "seconds": round(time.time() - start, 1),
    }
    (workdir / "report.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv) -> None:
    del argv
    from bridgetower_jax import host_memory
    host_memory.retain_freed_memory()
    from bridgetower_jax.train import setup_logging
    setup_logging()
    report = run_demo(Path(flags.FLAGS.workdir), flags.FLAGS.images, flags.FLAGS.pretrain_steps,
                      flags.FLAGS.vqa_steps)
    print("\n== BridgeTower demo report ==")
    print(f"held-out VQA score      {100 * report['vqa_score_heldout']:.1f}")
    print(f"majority-answer baseline {100 * report['vqa_majority_baseline']:.1f}")
    print(f"pre-training loss        {report['pretrain_first_losses']['loss']:.3f} -> "
          f"{report['pretrain_last_losses']['loss']:.3f}")
    print(f"Flax vs PyTorch max |diff| {report['flax_vs_pytorch_max_abs_diff']:.2e}")
    print(f"report: {os.path.join(flags.FLAGS.workdir, 'report.json')} ({report['seconds']} s)")


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir"])
    app.run(main)
