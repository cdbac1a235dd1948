"""Grain pipelines on a small demo corpus built through the real builders."""
import json
import types

import numpy as np
import pytest
from absl import flags

from bridgetower_jax.data import build, demo, pipeline, sources
from bridgetower_jax.data.text import IGNORE_LABEL, mask_tokens, mlm_prediction_slots
from bridgetower_jax.data.tokenizer import load_tokenizer, train_bpe_tokenizer

SIZE, T, B = 32, 16, 4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    demo.write_demo(str(root / "raw"), seed=0, coco_images=40, flickr_images=30, nlvr2_pairs=20, image_size=48)
    data_dir = str(root / "data")
    for dataset, manual, options in (("coco_karpathy", "coco", {}), ("vqav2", "coco", {"min_answer_count": 1}),
                                     ("f30k_karpathy", "flickr30k", {}), ("snli_ve", "flickr30k", {}),
                                     ("nlvr2", "nlvr2", {})):
        build.build(dataset, str(root / "raw" / manual), data_dir, **options)
    with open(root / "raw" / "corpus.txt") as f:
        tokenizer_dir = train_bpe_tokenizer(f.read().splitlines(), str(root / "tok"), vocab_size=300)
    return types.SimpleNamespace(data_dir=data_dir, tokenizer=load_tokenizer(tokenizer_dir))


def config(**overrides):
    return types.SimpleNamespace(**{"image_size": SIZE, "max_text_len": T, "read_threads": 2, **overrides})


TASK_DATASETS = {
    "pretrain": ["coco_karpathy:train+restval", "f30k_karpathy:train"],
    "vqa": ["vqav2:train"], "nlvr2": ["nlvr2:train"], "snli_ve": ["snli_ve:train"],
    "retrieval": ["f30k_karpathy:train+val"],
}
EXPECTED = {
    "pretrain": {"mlm_input_ids": ((B, T), np.int32), "mlm_labels": ((B, T), np.int32),
                 "itm_negative_pixel_values": ((B // 2, SIZE, SIZE, 3), np.float32)},
    "vqa": {"vqa_targets": ((B, None), np.float32), "question_id": ((B,), np.int64)},
    "nlvr2": {"labels": ((B,), np.int32)},
    "snli_ve": {"labels": ((B,), np.int32)},
    "retrieval": {"image_index": ((B,), np.int32)},
}


def train_iterator(corpus, task, *, seed=0, process_index=0, process_count=1, batch_size=B, **overrides):
    cfg = config(datasets=TASK_DATASETS[task], **overrides)
    return pipeline.make_train_iterator(task, cfg, corpus.data_dir, corpus.tokenizer, seed=seed,
                                        process_index=process_index, process_count=process_count,
                                        batch_size=batch_size)


@pytest.mark.parametrize("task", pipeline.TASKS)
def test_batch_shapes_and_dtypes(corpus, task):
    batch = next(train_iterator(corpus, task))
    pixels = (B, 2, SIZE, SIZE, 3) if task == "nlvr2" else (B, SIZE, SIZE, 3)
    expected = {"input_ids": ((B, T), np.int32), "attention_mask": ((B, T), np.int32),
                "pixel_values": (pixels, np.float32), "example_mask": ((B,), np.int32), **EXPECTED[task]}
    assert set(batch) == set(expected)
    for key, (shape, dtype) in expected.items():
        assert batch[key].dtype == dtype, key
        assert batch[key].shape[: len(shape)] == tuple(s if s is not None else batch[key].shape[i]
                                                       for i, s in enumerate(shape)), key
    assert np.all(batch["input_ids"][:, 0] == corpus.tokenizer.bos_token_id)
    assert np.all((batch["attention_mask"] == 0) == (batch["input_ids"] == corpus.tokenizer.pad_token_id))
    if task == "vqa":
        assert batch["vqa_targets"].shape[1] == len(sources.answer_vocabulary(corpus.data_dir))
        assert np.all(batch["vqa_targets"].max(1) > 0)


def test_mlm_masking_caps_predictions_per_row():
    """At most mlm_prediction_slots labels per row (what the train step decodes); a row under the cap
    is masked exactly as without one (same random draws)."""
    assert mlm_prediction_slots(40, 0.15) == 18 and mlm_prediction_slots(40, 1.0) == 38
    # Rows of 38 maskable tokens exceed 18 at 15 % less than once in a million.
    assert (np.random.default_rng(0).random((200_000, 38)) < 0.15).sum(-1).max() <= 18
    ids = np.arange(5, 45, dtype=np.int32)
    special = np.zeros_like(ids)
    special[[0, -1]] = 1
    kw = dict(mask_token_id=4, vocab_size=300)
    for seed in range(20):
        capped = mask_tokens(ids, special, np.random.default_rng(seed), mlm_prob=0.9, max_predictions=18, **kw)
        assert (capped[1] != IGNORE_LABEL).sum() == 18 and not (capped[1][[0, -1]] != IGNORE_LABEL).any()
        assert np.array_equal(capped[1][capped[1] != IGNORE_LABEL], ids[capped[1] != IGNORE_LABEL])
        free, loose = (mask_tokens(ids, special, np.random.default_rng(seed), mlm_prob=0.15, max_predictions=m, **kw)
                       for m in (None, 18))
        assert all(np.array_equal(a, b) for a, b in zip(free, loose))


def test_mlm_masking_rates_over_many_samples():
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 300, size=(4000, 40)).astype(np.int32)
    special = np.zeros_like(ids)
    special[:, 0] = special[:, 25:] = 1  # <s> and padding are never predicted
    masked, labels = mask_tokens(ids, special, rng, mlm_prob=0.15, mask_token_id=4, vocab_size=300)
    chosen = labels != IGNORE_LABEL
    assert not chosen[special == 1].any()
    assert abs(chosen[special == 0].mean() - 0.15) < 0.005
    assert np.array_equal(labels[chosen], ids[chosen])
    as_mask = masked[chosen] == 4
    unchanged = masked[chosen] == ids[chosen]
    assert abs(as_mask.mean() - 0.8) < 0.01
    # 10% random tokens (a random draw equals the original 1/295 of the time), 10% kept.
    assert abs((~as_mask & ~unchanged).mean() - 0.1 * (1 - 1 / 295)) < 0.01
    assert abs(unchanged.mean() - (0.1 + 0.1 / 295)) < 0.01
    assert np.array_equal(masked[~chosen], ids[~chosen])


def test_pipeline_mlm_respects_special_tokens(corpus):
    it = train_iterator(corpus, "pretrain")
    batches = [next(it) for _ in range(10)]
    labels = np.concatenate([b["mlm_labels"] for b in batches])
    ids = np.concatenate([b["input_ids"] for b in batches])
    mlm_ids = np.concatenate([b["mlm_input_ids"] for b in batches])
    special = np.isin(ids, [corpus.tokenizer.bos_token_id, corpus.tokenizer.eos_token_id,
                            corpus.tokenizer.pad_token_id])
    predicted = labels != IGNORE_LABEL
    assert not predicted[special].any()
    assert np.array_equal(labels[predicted], ids[predicted])
    assert 0.05 < predicted[~special].mean() < 0.3
    assert np.array_equal(mlm_ids[~predicted], ids[~predicted])


def test_itm_pairs_a_matched_row_with_a_real_mismatch(corpus):
    """Row 2k keeps its own image, row 2k+1 gets negative k: an image of the split other than its own."""
    it = train_iterator(corpus, "pretrain")
    for _ in range(8):
        batch = next(it)
        negatives = batch["itm_negative_pixel_values"]
        assert len(negatives) == B // 2
        for k in range(B // 2):
            assert not np.array_equal(negatives[k], batch["pixel_values"][2 * k + 1])


@pytest.mark.parametrize("process_index", [0, 1])
def test_itm_pairs_hold_with_workers_on_several_processes(corpus, process_index):
    """Each worker builds its own batches from every num_workers-th local element; the ITM labels
    follow that layout, so every batch still alternates matched / mismatched rows (ItmPairRows
    raises otherwise)."""
    flags.FLAGS.mark_as_parsed()
    it = train_iterator(corpus, "pretrain", process_index=process_index, process_count=2,
                        num_workers=2, worker_buffer_size=1)
    try:
        for _ in range(4):
            assert len(next(it)["itm_negative_pixel_values"]) == B // 2
    finally:
        it.close()


def _same_batches(a, b):
    return all(a_[k].tobytes() == b_[k].tobytes() for a_, b_ in zip(a, b) for k in a_)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_state_restore_gives_identical_next_batches(corpus, num_workers):
    if num_workers:
        flags.FLAGS.mark_as_parsed()
    cfg = dict(num_workers=num_workers, worker_buffer_size=1)
    it = train_iterator(corpus, "pretrain", **cfg)
    for _ in range(3):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    expected = [next(it) for _ in range(3)]
    restored = train_iterator(corpus, "pretrain", **cfg)
    restored.set_state(state)
    got = [next(restored) for _ in range(3)]
    assert _same_batches(expected, got)
    assert all(len(b["itm_negative_pixel_values"]) == B // 2 for b in got)   # (ItmPairRows checks the rows)
    for iterator in (it, restored):
        if num_workers:
            iterator.close()


def test_same_seed_same_batches_other_seed_differs(corpus):
    a, b, c = (next(train_iterator(corpus, "vqa", seed=s)) for s in (3, 3, 4))
    assert _same_batches([a], [b])
    assert not np.array_equal(a["question_id"], c["question_id"])


def test_two_processes_see_disjoint_shards_that_cover_the_data(corpus):
    part = sources.open_split(corpus.data_dir, "vqav2", "train")
    everything = sorted(int(part.texts[i]["question_id"]) for i in range(len(part.texts)))
    seen = []
    for process_index in (0, 1):
        it = train_iterator(corpus, "vqa", process_index=process_index, process_count=2, batch_size=1,
                            num_epochs=1, image_size=8)
        seen.append([int(q) for b in it for q in b["question_id"]])
    # Each process holds its rows of every complete global batch: disjoint, equally many, and
    # together everything but an incomplete last global batch (here at most one question).
    assert not set(seen[0]) & set(seen[1])
    assert set(seen[0] + seen[1]) <= set(everything)
    assert len(everything) - len(seen[0] + seen[1]) < 2
    assert len(seen[0]) == len(seen[1])


def test_eval_streams_are_padded_equally_and_cover_every_record(corpus):
    part = sources.open_split(corpus.data_dir, "vqav2", "val")
    everything = sorted(int(part.texts[i]["question_id"]) for i in range(len(part.texts)))
    per_process = []
    for process_index in (0, 1):
        it = pipeline.make_eval_iterator("vqa", config(image_size=8), corpus.data_dir, corpus.tokenizer,
                                         spec="vqav2:val", process_index=process_index, process_count=2,
                                         batch_size=8)
        per_process.append(list(it))
    assert len(per_process[0]) == len(per_process[1])
    real = [int(q) for batches in per_process for b in batches for q, m in zip(b["question_id"], b["example_mask"]) if m]
    assert sorted(real) == everything


def test_retrieval_eval_streams_cover_all_images_and_texts(corpus):
    part = sources.open_split(corpus.data_dir, "f30k_karpathy", "test")
    images, texts = pipeline.make_retrieval_eval_iterators(
        config(image_size=8), corpus.data_dir, corpus.tokenizer, spec="f30k_karpathy:test",
        process_index=0, process_count=1, batch_size=4)
    image_batches, text_batches = list(images), list(texts)
    seen_images = [int(i) for b in image_batches for i, m in zip(b["image_index"], b["example_mask"]) if m]
    seen_texts = [(int(t), int(i)) for b in text_batches
                  for t, i, m in zip(b["text_index"], b["image_index"], b["example_mask"]) if m]
    assert seen_images == list(range(len(part.images)))
    assert seen_texts == [(t, int(part.texts[t]["image_index"])) for t in range(len(part.texts))]
    assert image_batches[0]["pixel_values"].shape == (4, 8, 8, 3)
