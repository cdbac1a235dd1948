"""Grain input pipelines for every BridgeTower task: host-local, fixed-shape numpy batches.

    make_train_iterator(task, config, data_dir, tokenizer, *, seed, process_index, process_count, batch_size)
    make_eval_iterator(task, config, data_dir, tokenizer, *, spec, process_index, process_count, batch_size)
    make_retrieval_eval_iterators(config, data_dir, tokenizer, *, spec, process_index, process_count,
                                  batch_size) -> (image_iterator, text_iterator)
    train_examples_per_epoch(task, config, data_dir) -> int   (one epoch = one pass over these)

task: "pretrain" | "vqa" | "nlvr2" | "snli_ve" | "retrieval". `batch_size` is per process.
The returned iterators have `get_state()` / `set_state()` (save the state with every checkpoint;
resume with the same `num_workers` and `process_count`).

Config attributes read (plain attributes, e.g. an ml_collections ConfigDict; defaults in brackets):
    image_size          [288]   output H = W (288 pre-training, 384 NLVR2/SNLI-VE/IRTR, 576 VQA)
    max_text_len        [40]    every text is padded/truncated to this many tokens
    mlm_prob            [0.15]  pre-training MLM masking probability
    num_workers         [0]     Grain worker processes decoding/augmenting (0 = in this process)
    read_threads        [4]     threads per process (or per worker) running the per-example map
    worker_buffer_size  [2]     batches each worker keeps ready
    skip_bad_records    [False] a bad image at training time is substituted and logged instead of raising
    datasets            [task default]  dataset specs "name:split[+split]" for training; several
                                are mixed (pre-training) or concatenated (fine-tuning, e.g.
                                VQAv2 + VG-QA: ("vqav2:train+val", "vgqa:train+val"))
    dataset_weights     [None]  pre-training mixture weights (None: proportional to texts, as the
                                original's concatenation samples)
    train_transform     [task default]  see transforms.py (clip, blip_randaug_wc, ...)
    eval_transform      [task default]  "clip" for pre-training, "blip" for fine-tuning
    num_epochs          [None]  None = repeat forever (reshuffled every epoch); the trainer's
                                configs have no such key: a run's length is total_steps or epochs

Pipeline: index over all texts -> seeded global shuffle (re-seeded every epoch) -> per-example
decode/augment/tokenise (`random_map`: its Generator comes from the seed and the element's global
position, so results depend neither on the number of processes nor of workers; Grain maps lazily,
each process only makes its own examples) -> shard by JAX process
(each process takes its block of rows of every global batch) -> batch with drop_remainder ->
optional worker processes.

Batch keys (numpy, host-local): every task has input_ids, attention_mask int32 [B, T],
pixel_values float32 [B, H, W, 3] (NLVR2: [B, 2, H, W, 3]) CLIP-normalised, and example_mask
int32 [B] (0 marks the padding examples that make evaluation batches full; always 1 in training).
pretrain: mlm_input_ids, mlm_labels (-100 = not predicted) int32 [B, T], and ITM pairs: row 2k is
matched with its own image, row 2k+1 mismatched with itm_negative_pixel_values[k] float32
[B/2, H, W, 3] (B even; the ITM labels are implied by the row). vqa: vqa_targets float32
[B, num_answers], question_id int64 [B]. nlvr2, snli_ve: labels int32 [B] (SNLI-VE 0
contradiction, 1 neutral, 2 entailment). retrieval: image_index int32 [B]. Training with
skip_bad_records adds bad_images int32 [B] (images substituted per example; the trainer pops and
counts it). Retrieval evaluation:
images stream (pixel_values, image_index), texts stream (input_ids, attention_mask, text_index,
image_index).
"""
from __future__ import annotations

import math
from typing import Sequence

import grain
import numpy as np
from absl import flags

from bridgetower_jax.data import sources as sources_lib
from bridgetower_jax.data import task_examples
from bridgetower_jax.data.transforms import ImageTransform

TASKS = ("pretrain", "vqa", "nlvr2", "snli_ve", "retrieval")

# The original's choices (scripts/*.sh of microsoft/BridgeTower).
DEFAULT_TRAIN_DATASETS = {
    "pretrain": ("coco_karpathy:train+restval", "visual_genome:train", "sbu:train", "conceptual_captions:train"),
    "vqa": ("vqav2:train+val",),
    "nlvr2": ("nlvr2:train",),
    "snli_ve": ("snli_ve:train",),
    "retrieval": ("f30k_karpathy:train+val",),
}
DEFAULT_TRAIN_TRANSFORM = {"pretrain": "clip", "vqa": "blip_randaug_wohf", "nlvr2": "blip_randaug_wc",
                           "snli_ve": "blip_randaug_wc", "retrieval": "blip_randaug_wc"}
DEFAULT_EVAL_TRANSFORM = {"pretrain": "clip", "vqa": "blip", "nlvr2": "blip", "snli_ve": "blip",
                          "retrieval": "blip"}
_EXAMPLE_CLASSES = {"pretrain": task_examples.PretrainExample, "vqa": task_examples.VqaExample,
                    "nlvr2": task_examples.Nlvr2Example, "snli_ve": task_examples.SnliVeExample,
                    "retrieval": task_examples.RetrievalPairExample}


def _option(config, name: str, default):
    value = getattr(config, name, None)
    return default if value is None else value


class _TagPart(grain.transforms.Map):
    """record index -> (part, record, valid=1)."""

    def __init__(self, part: int):
        self.part = part

    def map(self, record):
        return self.part, int(record), 1


class _PaddedEvalIndex(grain.transforms.Map):
    """Position in the padded evaluation stream -> (part, record, valid)."""

    def __init__(self, part_sizes: Sequence[int]):
        self.starts = np.cumsum([0, *part_sizes])

    def map(self, position):
        position = int(position)
        if position >= self.starts[-1]:
            return 0, 0, 0  # padding: any real record, masked out by example_mask
        part = int(np.searchsorted(self.starts, position, side="right") - 1)
        return part, position - int(self.starts[part]), 1


def _shuffled_texts(parts: Sequence[sources_lib.SplitSource], first_part: int, seed: int,
                    num_epochs: int | None) -> grain.MapDataset:
    pieces = [grain.MapDataset.range(len(p.texts)).map(_TagPart(first_part + i)) for i, p in enumerate(parts)]
    dataset = grain.MapDataset.concatenate(pieces) if len(pieces) > 1 else pieces[0]
    return dataset.seed(seed).shuffle().repeat(num_epochs)


class _ProcessRows(grain.MapDataset):
    """This process's rows of each global batch: global batch b is elements [bB, (b+1)B) of the
    stream (B = local_batch x process_count) and process p holds rows [pL, (p+1)L) of it, the rows
    that `jax.make_array_from_process_local_data` places on p's devices."""

    def __init__(self, parent: grain.MapDataset, process_index: int, process_count: int, local_batch: int):
        super().__init__(parent)
        self._index, self._count, self._local = process_index, process_count, local_batch

    def __len__(self) -> int:
        # Complete global batches only: every process then makes the same number of batches (an
        # incomplete last batch would be dropped anyway, and uneven counts would hang a collective).
        return len(self._parent) // (self._local * self._count) * self._local

    def __getitem__(self, k):
        if isinstance(k, slice):
            return self.slice(k)
        batch, row = divmod(k, self._local)
        return self._parent[(batch * self._count + self._index) * self._local + row]

    def __str__(self) -> str:
        return f"ProcessRows(process={self._index}/{self._count}, local_batch={self._local})"


def _examples(dataset: grain.MapDataset, example: grain.transforms.RandomMap, seed: int) -> grain.MapDataset:
    # Each element's position and random Generator come from its index in `dataset`.
    return dataset.map_with_index(task_examples.AttachPosition()).seed(seed).random_map(example)


def _batched(dataset: grain.MapDataset, config, batch_size: int, task: str | None = None):
    read = grain.ReadOptions(num_threads=_option(config, "read_threads", 4),
                             prefetch_buffer_size=2 * batch_size)
    iter_dataset = dataset.to_iter_dataset(read).batch(batch_size, drop_remainder=True)
    if task == "pretrain":
        iter_dataset = iter_dataset.map(task_examples.ItmPairRows())   # in the workers, when there are any
    num_workers = _option(config, "num_workers", 0)
    if num_workers:
        # Grain's worker processes read an absl flag; outside absl.app.run nothing parsed them.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        iter_dataset = iter_dataset.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=num_workers, per_worker_buffer_size=_option(config, "worker_buffer_size", 2)))
    return iter(iter_dataset)


def _finish(dataset: grain.MapDataset, example: grain.transforms.RandomMap, config, seed: int,
            batch_size: int, task: str | None = None):
    return _batched(_examples(dataset, example, seed), config, batch_size, task)


def _example(task: str, parts, tokenizer, config, transform_name: str, data_dir: str, **extra):
    common = dict(parts=parts, tokenizer=tokenizer,
                  image_transform=ImageTransform(transform_name, _option(config, "image_size", 288)),
                  max_text_len=_option(config, "max_text_len", 40),
                  skip_bad_records=bool(_option(config, "skip_bad_records", False)))
    if task == "pretrain":
        extra.setdefault("mlm_prob", _option(config, "mlm_prob", 0.15))
        extra["workers"] = _option(config, "num_workers", 0)
    if task == "vqa":
        extra["num_answers"] = len(sources_lib.shared_answer_vocabulary(data_dir, [p.dataset for p in parts]))
    if task == "retrieval":
        extra["image_offsets"] = list(np.cumsum([0] + [len(p.images) for p in parts[:-1]]))
    return _EXAMPLE_CLASSES[task](**common, **extra)


def train_dataset_specs(task: str, config) -> list[str]:
    """The "name:split[+split]" specs a run trains on: config.datasets, or the task's default."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {TASKS}")
    return list(_option(config, "datasets", DEFAULT_TRAIN_DATASETS[task]))


def train_examples_per_epoch(task: str, config, data_dir: str) -> int:
    """Examples in one pass over the training datasets: every text record is one example (one row of
    the batch; in pre-training half the rows pair their text with another image for ITM). With
    pre-training mixture weights an epoch is this many examples, not one pass over each dataset."""
    return sum(len(p.texts) for spec in train_dataset_specs(task, config) for p in sources_lib.open_spec(data_dir, spec))


def make_train_iterator(task: str, config, data_dir: str, tokenizer, *, seed: int, process_index: int,
                        process_count: int, batch_size: int):
    """Endless (or `num_epochs`) shuffled training batches of `task` for this process."""
    specs = train_dataset_specs(task, config)
    num_epochs = _option(config, "num_epochs", None)
    parts, per_dataset = [], []
    for k, spec in enumerate(specs):
        opened = sources_lib.open_spec(data_dir, spec)
        per_dataset.append(_shuffled_texts(opened, len(parts), seed + 1000 * k, num_epochs))
        parts.extend(opened)
    if len(per_dataset) == 1:
        dataset = per_dataset[0]
    elif task == "pretrain":
        weights = _option(config, "dataset_weights", None) or [
            sum(len(p.texts) for p in sources_lib.open_spec(data_dir, s)) for s in specs]
        dataset = grain.MapDataset.mix(per_dataset, weights=[float(w) for w in weights])
    else:
        # Fine-tuning on several datasets (VQAv2 + VG-QA) concatenates them, as the original's
        # ConcatDataset does: one shuffle over all their texts.
        dataset = _shuffled_texts(parts, 0, seed, num_epochs)
    extra = {}
    if task == "pretrain":
        # Without workers the ITM labels alternate along the global stream (the same pairs for any
        # process count); with workers, along each worker's batches.
        extra.update(global_batch=batch_size * process_count, local_batch=batch_size)
    example = _example(task, parts, tokenizer, config,
                       _option(config, "train_transform", DEFAULT_TRAIN_TRANSFORM[task]), data_dir, **extra)
    if example.skip_bad_records:
        example = task_examples.CountSubstitutions(example)
    # Examples are made from the *global* stream before it is split over processes: every example
    # (its MLM mask, ITM pairing, augmentation) and its row in the global batch are the same whatever
    # the number of processes, so a run on N hosts sees exactly the global batches of a run on one.
    examples = _ProcessRows(_examples(dataset, example, seed), process_index, process_count, batch_size)
    return _batched(examples, config, batch_size, task)


def _padded_eval_stream(part_sizes: Sequence[int], process_index: int, process_count: int,
                        batch_size: int) -> grain.MapDataset:
    # Every process gets the same number of full batches; the tail is padding (example_mask 0).
    total = sum(part_sizes)
    padded = max(1, math.ceil(total / (process_count * batch_size))) * process_count * batch_size
    return grain.MapDataset.range(padded).map(_PaddedEvalIndex(part_sizes))[process_index::process_count]


def make_eval_iterator(task: str, config, data_dir: str, tokenizer, *, spec: str, process_index: int,
                       process_count: int, batch_size: int):
    """One ordered pass over `spec` (e.g. "vqav2:val"), padded to full batches on every process."""
    parts = sources_lib.open_spec(data_dir, spec)
    dataset = _padded_eval_stream([len(p.texts) for p in parts], process_index, process_count, batch_size)
    transform = _option(config, "eval_transform", DEFAULT_EVAL_TRANSFORM[task])
    example = _example(task, parts, tokenizer, config, transform, data_dir)
    return _finish(dataset, example, config, 0, batch_size, task)


def make_retrieval_eval_iterators(config, data_dir: str, tokenizer, *, spec: str, process_index: int,
                                  process_count: int, batch_size: int):
    """(images, texts) streams over one split ("f30k_karpathy:test") for the all-pairs score matrix."""
    parts = sources_lib.open_spec(data_dir, spec)
    if len(parts) != 1:
        raise ValueError(f"retrieval evaluation takes one split, got {spec!r}")
    transform = ImageTransform(_option(config, "eval_transform", DEFAULT_EVAL_TRANSFORM["retrieval"]),
                               _option(config, "image_size", 288))
    images = _finish(_padded_eval_stream([len(parts[0].images)], process_index, process_count, batch_size),
                     task_examples.RetrievalImageExample(parts=parts, image_transform=transform),
                     config, 0, batch_size)
    text_example = task_examples.RetrievalTextExample(
        parts=parts, tokenizer=tokenizer, image_transform=transform,
        max_text_len=_option(config, "max_text_len", 40))
    texts = _finish(_padded_eval_stream([len(parts[0].texts)], process_index, process_count, batch_size),
                    text_example, config, 0, batch_size)
    return images, texts
