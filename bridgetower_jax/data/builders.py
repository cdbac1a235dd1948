"""TFDS builders that write ArrayRecord without TensorFlow, one per dataset, each in two configs.

    <data_dir>/<dataset>/images/1.0.0   one record per image: encoded bytes + image_id
    <data_dir>/<dataset>/texts/1.0.0    one record per caption / question / sentence, with
                                        `image_index` (NLVR2: `image_index_0/1`) = position in
                                        the same split of the images config

Both configs are written from one `PreparedCorpus` (raw files read once, images checked once).
Shuffling is disabled so that the position of an image in its split is its yield index, which
is what `image_index` refers to. Images are stored as raw encoded bytes
(`Tensor(shape=(), dtype=object)`: `tfds.features.Image` needs TensorFlow) and decoded in the
Grain workers.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from bridgetower_jax.data.bad_records import BadRecordLog
from bridgetower_jax.data.raw import arrow_tables, captions, nlvr2, snli_ve, vgqa, vqav2
from bridgetower_jax.data.raw.plan import CorpusPlan, ResolvedSplit, resolve_split

VERSION = "1.0.0"
CONFIGS = ("images", "texts")


class PreparedCorpus:
    """A `CorpusPlan` whose splits are resolved (images checked, indices assigned) on first use."""

    def __init__(self, plan: CorpusPlan):
        self.plan = plan

    @functools.cache
    def split(self, name: str) -> ResolvedSplit:
        return resolve_split(name, self.plan.splits[name], self.plan.log)

    def nonempty_splits(self) -> list[str]:
        names = []
        for name in self.plan.splits:
            if self.split(name).records:
                names.append(name)
            else:
                logging.warning("split %s has no records left; it is not written", name)
        return names


def _image_features():
    return {"image": tfds.features.Tensor(shape=(), dtype=np.object_), "image_id": tfds.features.Text()}


def _text_features(kind: str, answer_vocabulary: list[str] | None):
    common = {"text": tfds.features.Text(), "image_id": tfds.features.Text()}
    index = {"image_index": np.int64}
    if kind == "captions":
        return {**common, **index, "caption_index": np.int32}
    if kind == "vqa":
        return {**common, **index, "question_id": np.int64,
                "answers": tfds.features.Sequence(tfds.features.Text()),
                "answer_labels": tfds.features.Sequence(tfds.features.ClassLabel(names=answer_vocabulary)),
                "answer_scores": tfds.features.Sequence(np.float32),
                "answer_type": tfds.features.Text()}
    if kind == "nlvr2":
        return {"text": tfds.features.Text(), "identifier": tfds.features.Text(),
                "image_index_0": np.int64, "image_index_1": np.int64,
                "label": tfds.features.ClassLabel(names=["False", "True"])}
    if kind == "snli_ve":
        return {**common, **index, "premise": tfds.features.Text(),
                "label": tfds.features.ClassLabel(names=list(snli_ve.LABEL_NAMES))}
    raise ValueError(f"unknown dataset kind {kind!r}")


class _CorpusBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes one config ("images" or "texts") of a `PreparedCorpus`."""

    VERSION = tfds.core.Version(VERSION)
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=c) for c in CONFIGS]
    KIND = ""
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Use `python -m bridgetower_jax.data.build` with --manual_dir."
    # TFDS looks for a checksums file beside the builder's code through `importlib_resources`,
    # which is not installed; these builders download nothing, so there is no such file.
    code_path = None

    def __init__(self, *, corpus: PreparedCorpus | None = None, **kwargs):
        self._corpus = corpus
        super().__init__(**kwargs)

    def _info(self):
        if self.builder_config.name == "images":
            features = _image_features()
        else:
            vocabulary = self._corpus.plan.answer_vocabulary if self._corpus else None
            features = _text_features(self.KIND, vocabulary)
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features),
                                     disable_shuffling=True, description=self.__doc__)

    def _split_generators(self, dl_manager):
        if self._corpus is None:
            raise ValueError("this builder writes from a PreparedCorpus; use bridgetower_jax.data.build")
        return {name: self._generate_examples(name) for name in self._corpus.nonempty_splits()}

    def _generate_examples(self, split: str):
        resolved = self._corpus.split(split)
        if self.builder_config.name == "images":
            for i, ref in enumerate(resolved.images):
                yield i, {"image": ref.read(), "image_id": ref.key}
        else:
            yield from enumerate(resolved.records)


class CocoKarpathy(_CorpusBuilder, skip_registration=True):
    """COCO captions, Karpathy splits (train, restval, val, test)."""
    name, KIND = "coco_karpathy", "captions"


class F30kKarpathy(_CorpusBuilder, skip_registration=True):
    """Flickr30K captions, Karpathy splits (train, val, test)."""
    name, KIND = "f30k_karpathy", "captions"


class VisualGenomeCaptions(_CorpusBuilder, skip_registration=True):
    """Visual Genome region descriptions as captions."""
    name, KIND = "visual_genome", "captions"


class SbuCaptions(_CorpusBuilder, skip_registration=True):
    """SBU captions."""
    name, KIND = "sbu", "captions"


class ConceptualCaptions(_CorpusBuilder, skip_registration=True):
    """Conceptual Captions (CC3M)."""
    name, KIND = "conceptual_captions", "captions"


class Vqav2(_CorpusBuilder, skip_registration=True):
    """VQAv2 questions with soft answer targets over the train+val answer vocabulary."""
    name, KIND = "vqav2", "vqa"


class Vgqa(_CorpusBuilder, skip_registration=True):
    """Visual Genome QA on all VG images, in the VQAv2 answer vocabulary (score 1.0 per question)."""
    name, KIND = "vgqa", "vqa"


class VgqaCoco(_CorpusBuilder, skip_registration=True):
    """Visual Genome QA on the VG images that are COCO Karpathy images, in the VQAv2 vocabulary."""
    name, KIND = "vgqa_coco", "vqa"


class Nlvr2(_CorpusBuilder, skip_registration=True):
    """NLVR2 sentences about image pairs."""
    name, KIND = "nlvr2", "nlvr2"


class SnliVe(_CorpusBuilder, skip_registration=True):
    """SNLI-VE: Flickr30K image premise, text hypothesis."""
    name, KIND = "snli_ve", "snli_ve"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    builder: type
    read_raw: Callable[..., CorpusPlan]
    read_arrow: Callable[..., CorpusPlan]


DATASETS = {
    "coco_karpathy": DatasetSpec(CocoKarpathy, captions.read_coco_karpathy,
                                 functools.partial(arrow_tables.read_caption_arrows, dataset="coco_karpathy")),
    "f30k_karpathy": DatasetSpec(F30kKarpathy, captions.read_f30k_karpathy,
                                 functools.partial(arrow_tables.read_caption_arrows, dataset="f30k_karpathy")),
    "visual_genome": DatasetSpec(VisualGenomeCaptions, captions.read_visual_genome,
                                 functools.partial(arrow_tables.read_caption_arrows, dataset="visual_genome")),
    "sbu": DatasetSpec(SbuCaptions, captions.read_sbu,
                       functools.partial(arrow_tables.read_caption_arrows, dataset="sbu")),
    "conceptual_captions": DatasetSpec(ConceptualCaptions, captions.read_conceptual_captions,
                                       functools.partial(arrow_tables.read_caption_arrows,
                                                         dataset="conceptual_captions")),
    "vqav2": DatasetSpec(Vqav2, vqav2.read_vqav2,
                         functools.partial(arrow_tables.read_vqa_arrows, dataset="vqav2")),
    # Two datasets rather than one with an option: each variant gets its own directory (a build
    # keeps an existing one), and a training spec says which one it mixes in.
    "vgqa": DatasetSpec(Vgqa, vgqa.read_vgqa, functools.partial(arrow_tables.read_vqa_arrows, dataset="vgqa")),
    "vgqa_coco": DatasetSpec(VgqaCoco, functools.partial(vgqa.read_vgqa, coco_images_only=True),
                             functools.partial(arrow_tables.read_vqa_arrows, dataset="vgqa_coco")),
    "nlvr2": DatasetSpec(Nlvr2, nlvr2.read_nlvr2, arrow_tables.read_nlvr2_arrows),
    "snli_ve": DatasetSpec(SnliVe, snli_ve.read_snli_ve, arrow_tables.read_snli_ve_arrows),
}


# The VQA datasets: one label space, the VQAv2 answer vocabulary.
VQA_DATASETS = ("vqav2", "vgqa", "vgqa_coco")


def resolve_source(dataset: str, manual_dir: str, source: str = "auto") -> str:
    """"raw" or "arrow"; "auto" takes the original's .arrow files when `manual_dir` has them."""
    if source == "auto":
        return "arrow" if _has_arrow_files(dataset, manual_dir) else "raw"
    return source


def read_corpus(dataset: str, manual_dir: str, *, source: str = "auto",
                skip_bad_records=False, **reader_options) -> PreparedCorpus:
    """Reads the raw files (`source="raw"`) or the original's .arrow files (`"arrow"`)."""
    spec = DATASETS[dataset]
    log = BadRecordLog(skip_bad_records)
    reader = spec.read_arrow if resolve_source(dataset, manual_dir, source) == "arrow" else spec.read_raw
    return PreparedCorpus(reader(manual_dir, log=log, **reader_options))


def _has_arrow_files(dataset: str, manual_dir: str) -> bool:
    try:
        return bool(arrow_tables.split_files(manual_dir, dataset))
    except FileNotFoundError:
        return False


def write_corpus(dataset: str, corpus: PreparedCorpus, data_dir: str) -> dict:
    """Writes both configs; returns {config: {split: examples}} (existing versions are kept)."""
    written = {}
    for config in CONFIGS:
        builder = DATASETS[dataset].builder(data_dir=data_dir, config=config, file_format="array_record",
                                            corpus=corpus)
        builder.download_and_prepare()
        written[config] = {name: info.num_examples for name, info in builder.info.splits.items()}
    return written
