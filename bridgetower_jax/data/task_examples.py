"""Per-example Grain transforms: one text record (+ its image(s)) -> a dict of fixed-shape arrays.

Each runs inside the Grain workers. The element they receive is `(position, (part, record, valid))`:
`part` indexes the list of `SplitSource`s, `record` the text record in it, `valid` is 0 for the
padding examples of evaluation streams, and `position` is the element's place in this process's
stream (used to give ITM exactly half positives per batch).
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Any, Sequence

import grain
import numpy as np
from absl import logging

from bridgetower_jax import faults
from bridgetower_jax.data.bad_records import BadRecordError
from bridgetower_jax.data.sources import SplitSource
from bridgetower_jax.data.text import encode_fixed_length, mask_tokens, mlm_prediction_slots
from bridgetower_jax.data.transforms import ImageTransform

_MAX_SUBSTITUTIONS = 16
BAD_IMAGES = "bad_images"   # training batches with skip_bad_records: images substituted per example
_substituted = threading.local()   # per Grain read thread: substitutions in the example being made


def transform_image(source: SplitSource, index: int, transform: ImageTransform,
                    rng: np.random.Generator | None) -> np.ndarray:
    record = source.images[index]
    try:
        return transform(faults.image_bytes(index, record["image"]), rng)
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for bad data
        raise BadRecordError(f"cannot decode image {record['image_id'].decode()} (image {index} of "
                             f"{source.name}): {type(e).__name__}: {e}") from e


class AttachPosition(grain.transforms.MapWithIndex):
    def map_with_index(self, index: int, element):
        return index, element


@dataclasses.dataclass
class _ExampleBase(grain.transforms.RandomMap):
    parts: Sequence[SplitSource]
    tokenizer: Any
    image_transform: ImageTransform
    max_text_len: int
    skip_bad_records: bool = False

    def text_record(self, part: int, record: int) -> dict:
        return self.parts[part].texts[record]

    def encode(self, rec: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return encode_fixed_length(self.tokenizer, rec["text"].decode("utf-8"), self.max_text_len)

    def image(self, part: int, image_index: int, rng: np.random.Generator | None) -> np.ndarray:
        """Decoded, transformed image; a bad one raises with its name, or is substituted and logged."""
        source = self.parts[part]
        for attempt in range(_MAX_SUBSTITUTIONS):
            index = (image_index + attempt) % len(source.images)
            try:
                return transform_image(source, index, self.image_transform, rng)
            except BadRecordError as e:
                if not self.skip_bad_records:
                    raise BadRecordError(f"{e} (set skip_bad_records to substitute it)") from e.__cause__
                logging.warning("bad image, substituting the next one: %s", e)
                _substituted.count = getattr(_substituted, "count", 0) + 1
        raise BadRecordError(f"{_MAX_SUBSTITUTIONS} consecutive bad images in {source.name}")

    def text_fields(self, rec: dict, valid: int) -> dict:
        input_ids, attention_mask, _ = self.encode(rec)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "example_mask": np.int32(valid)}


class CountSubstitutions(grain.transforms.RandomMap):
    """Wraps a training example transform: adds BAD_IMAGES, how many bad images were substituted
    while making the example, so the count reaches the trainer from any worker process."""

    def __init__(self, example: grain.transforms.RandomMap):
        self.example = example

    def random_map(self, element, rng: np.random.Generator) -> dict:
        _substituted.count = 0
        out = self.example.random_map(element, rng)
        return {**out, BAD_IMAGES: np.int32(_substituted.count)}


@dataclasses.dataclass
class PretrainExample(_ExampleBase):
    """MLM on the true pair; ITM with a different image of the same split where the label is 0."""
    mlm_prob: float = 0.15
    # The ITM label follows the element's row in the batch that a worker builds, so that rows alternate
    # matched / mismatched in every batch (`ItmPairRows`). Training positions count the global stream
    # (global batches of `global_batch` rows, `local_batch` of them this process's); evaluation
    # positions are already this process's (global_batch 0). A worker builds its batches from every
    # `workers`-th local element.
    global_batch: int = 0
    local_batch: int = 0
    workers: int = 1

    def itm_label(self, position: int) -> int:
        local = position
        if self.global_batch:
            local = position // self.global_batch * self.local_batch + position % self.local_batch
        return 1 - (local // max(self.workers, 1)) % 2

    def random_map(self, element, rng: np.random.Generator) -> dict:
        position, (part, record, valid) = element
        rec = self.text_record(part, record)
        input_ids, attention_mask, special = self.encode(rec)
        mlm_ids, mlm_labels = mask_tokens(input_ids, special, rng, mlm_prob=self.mlm_prob,
                                          mask_token_id=self.tokenizer.mask_token_id,
                                          vocab_size=len(self.tokenizer),
                                          max_predictions=mlm_prediction_slots(self.max_text_len, self.mlm_prob))
        image_index = int(rec["image_index"])
        pixel_values = self.image(part, image_index, rng)
        itm_label = self.itm_label(position)
        if itm_label:
            itm_pixels = pixel_values
        else:
            n = len(self.parts[part].images)
            negative = int(rng.integers(n - 1))
            negative += negative >= image_index  # any image but the true one
            itm_pixels = self.image(part, negative, rng)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values,
                "mlm_input_ids": mlm_ids, "mlm_labels": mlm_labels, "itm_pixel_values": itm_pixels,
                "itm_labels": np.int32(itm_label), "example_mask": np.int32(valid)}


class ItmPairRows(grain.transforms.Map):
    """A pre-training batch -> the layout the train step reads: ITM pairs of rows (matched at even rows,
    mismatched at odd rows, as `PretrainExample.itm_label` makes them) and only the mismatched rows'
    images, `itm_negative_pixel_values` [B/2]. The matched rows' ITM image is their own image, which
    the step encodes once for MLM and ITM (`BridgeTowerForPreTraining.pretraining_forwards`)."""

    def map(self, batch: dict) -> dict:
        labels = batch.pop("itm_labels")
        if len(labels) % 2 or np.any(labels != 1 - np.arange(len(labels)) % 2):
            raise ValueError(f"a pre-training batch of {len(labels)} rows does not alternate matched / mismatched "
                             f"ITM rows (labels {labels.tolist()}); the batch size per process must be even")
        negatives = batch.pop("itm_pixel_values")[1::2]
        return {**batch, "itm_negative_pixel_values": negatives}


@dataclasses.dataclass
class VqaExample(_ExampleBase):
    num_answers: int = 0

    def random_map(self, element, rng: np.random.Generator) -> dict:
        _, (part, record, valid) = element
        rec = self.text_record(part, record)
        targets = np.zeros((self.num_answers,), np.float32)
        targets[np.asarray(rec["answer_labels"], np.int64)] = np.asarray(rec["answer_scores"], np.float32)
        return {**self.text_fields(rec, valid),
                "pixel_values": self.image(part, int(rec["image_index"]), rng),
                "vqa_targets": targets, "question_id": np.int64(rec["question_id"])}


@dataclasses.dataclass
class Nlvr2Example(_ExampleBase):
    def random_map(self, element, rng: np.random.Generator) -> dict:
        _, (part, record, valid) = element
        rec = self.text_record(part, record)
        pair = [self.image(part, int(rec[f"image_index_{side}"]), rng) for side in (0, 1)]
        return {**self.text_fields(rec, valid), "pixel_values": np.stack(pair),
                "labels": np.int32(rec["label"])}


@dataclasses.dataclass
class SnliVeExample(_ExampleBase):
    def random_map(self, element, rng: np.random.Generator) -> dict:
        _, (part, record, valid) = element
        rec = self.text_record(part, record)
        return {**self.text_fields(rec, valid), "pixel_values": self.image(part, int(rec["image_index"]), rng),
                "labels": np.int32(rec["label"])}


@dataclasses.dataclass
class RetrievalPairExample(_ExampleBase):
    """A caption with its image; `image_index` is unique across the parts (same image = positive)."""
    image_offsets: Sequence[int] = ()

    def random_map(self, element, rng: np.random.Generator) -> dict:
        _, (part, record, valid) = element
        rec = self.text_record(part, record)
        image_index = int(rec["image_index"])
        return {**self.text_fields(rec, valid), "pixel_values": self.image(part, image_index, rng),
                "image_index": np.int32(self.image_offsets[part] + image_index)}


@dataclasses.dataclass
class RetrievalTextExample(_ExampleBase):
    """Evaluation text stream: `text_index` is the record's position, `image_index` its image."""

    def random_map(self, element, rng: np.random.Generator) -> dict:
        _, (part, record, valid) = element
        rec = self.text_record(part, record)
        return {**self.text_fields(rec, valid), "text_index": np.int32(record),
                "image_index": np.int32(rec["image_index"])}


@dataclasses.dataclass
class RetrievalImageExample(grain.transforms.RandomMap):
    """Evaluation image stream over the images records themselves (`record` = image index)."""
    parts: Sequence[SplitSource]
    image_transform: ImageTransform

    def random_map(self, element, rng: np.random.Generator) -> dict:
        _, (part, record, valid) = element
        # Gallery images are never substituted: that would silently change the metric.
        return {"pixel_values": transform_image(self.parts[part], record, self.image_transform, rng),
                "image_index": np.int32(record),
                "example_mask": np.int32(valid)}
