"""Random-access sources over prepared datasets (`python -m bridgetower_jax.data.build`).

A dataset spec names a dataset and one or more of its splits: "coco_karpathy:train+restval".
Each split opens as a `SplitSource`: the texts records and the images records of that split
(`image_index` in a text record is a position in the same split's images). Reading uses TFDS's
`as_data_source` on the prepared directory only: no builder class, no TensorFlow.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import tensorflow_datasets as tfds

from bridgetower_jax import paths
from bridgetower_jax.data.builders import VERSION


@dataclasses.dataclass(frozen=True)
class SplitSource:
    dataset: str
    split: str
    texts: Any    # random access: len(), [i] -> dict of numpy values / bytes
    images: Any

    @property
    def name(self) -> str:
        return f"{self.dataset}:{self.split}"


def parse_dataset_spec(spec: str) -> tuple[str, list[str]]:
    dataset, _, splits = spec.partition(":")
    if not splits:
        raise ValueError(f"dataset spec {spec!r} must look like 'name:split[+split...]'")
    return dataset, splits.split("+")


def prepared_dir(data_dir: str, dataset: str, config: str) -> str:
    path = os.path.join(data_dir, dataset, config, VERSION)
    if not paths.is_file(os.path.join(path, "dataset_info.json"), "config.data.data_dir"):
        raise FileNotFoundError(
            f"{path} is not a prepared dataset; run `python -m bridgetower_jax.data.build {dataset} "
            f"--manual_dir ... --data_dir {data_dir}` first")
    return path


def _builder(data_dir: str, dataset: str, config: str):
    return tfds.builder_from_directory(prepared_dir(data_dir, dataset, config))


def open_split(data_dir: str, dataset: str, split: str) -> SplitSource:
    texts, images = (_builder(data_dir, dataset, c) for c in ("texts", "images"))
    if split not in texts.info.splits:
        raise ValueError(f"{dataset} has no split {split!r}; it has {sorted(texts.info.splits)}")
    return SplitSource(dataset=dataset, split=split, texts=texts.as_data_source(split),
                       images=images.as_data_source(split))


def open_spec(data_dir: str, spec: str) -> list[SplitSource]:
    dataset, splits = parse_dataset_spec(spec)
    return [open_split(data_dir, dataset, s) for s in splits]


def answers_published(spec: str) -> bool:
    """Whether a VQA spec's splits have published answers (not test / test_dev, scored by EvalAI only);
    a spec mixing both would score the unanswered questions 0, and is refused."""
    from bridgetower_jax.data.raw.arrow_tables import UNANSWERED_SPLITS
    _, splits = parse_dataset_spec(spec)
    unanswered = [s for s in splits if s in UNANSWERED_SPLITS]
    if unanswered and len(unanswered) < len(splits):
        raise ValueError(f"{spec!r} mixes splits with answers and without ({', '.join(unanswered)}): "
                         "evaluate them separately")
    return not unanswered


def answer_vocabulary(data_dir: str, dataset: str = "vqav2") -> list[str]:
    """VQA label id -> answer string, as written by the builder."""
    return list(_builder(data_dir, dataset, "texts").info.features["answer_labels"].feature.names)


def shared_answer_vocabulary(data_dir: str, datasets) -> list[str]:
    """The answer vocabulary of VQA datasets used together, which must label answers alike."""
    first, *others = dict.fromkeys(datasets)
    vocabulary = answer_vocabulary(data_dir, first)
    for other in others:
        if answer_vocabulary(data_dir, other) != vocabulary:
            raise ValueError(f"{first} and {other} have different answer vocabularies; rebuild {other} with "
                             f"{first}'s (remove {os.path.join(data_dir, other)}; the build labels VG-QA in the "
                             "vocabulary of the vqav2 in the same data_dir, or in --answer_vocab)")
    return vocabulary
