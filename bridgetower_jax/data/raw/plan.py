"""What a builder will write, read from raw files: images by key, text records pointing at keys.

Readers of every raw format produce a `CorpusPlan`; `resolve_split` then checks each image once,
drops bad ones (through the `BadRecordLog`), and turns image keys into positions in the split's
image table. Images are stored once per split and text records carry `image_index`.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from tqdm import tqdm

from bridgetower_jax.data.bad_records import BadRecordLog
from bridgetower_jax.data.image_check import image_problem


@dataclasses.dataclass(frozen=True)
class ImageRef:
    """An encoded image: a file, or a cell of an Arrow binary column (`arrow_column[arrow_row]`)."""
    key: str
    origin: str                   # the file (or table) named in error messages
    path: str | None = None
    arrow_column: Any = None
    arrow_row: int = -1

    def read(self) -> bytes:
        if self.path is not None:
            with open(self.path, "rb") as f:
                return f.read()
        return self.arrow_column[self.arrow_row].as_py() or b""

    def exists(self) -> bool:
        return self.path is None or os.path.isfile(self.path)


@dataclasses.dataclass
class TextRecord:
    fields: dict                  # feature values except the image indices
    image_keys: tuple[str, ...]   # one key, or two for NLVR2
    file: str                     # where the record came from, for error messages
    record: str                   # e.g. "question_id=123"


@dataclasses.dataclass
class SplitPlan:
    images: dict[str, ImageRef] = dataclasses.field(default_factory=dict)
    records: list[TextRecord] = dataclasses.field(default_factory=list)

    def add_image(self, ref: ImageRef) -> None:
        self.images.setdefault(ref.key, ref)


@dataclasses.dataclass
class CorpusPlan:
    kind: str                     # "captions" | "vqa" | "nlvr2" | "snli_ve"
    splits: dict[str, SplitPlan]
    log: BadRecordLog
    answer_vocabulary: list[str] | None = None   # VQA only: label id -> answer


@dataclasses.dataclass
class ResolvedSplit:
    images: list[ImageRef]
    records: list[dict]           # fields + image_index (or image_index_0/1)


def resolve_split(name: str, plan: SplitPlan, log: BadRecordLog) -> ResolvedSplit:
    kept: dict[str, int] = {}
    images = []
    for key, ref in tqdm(plan.images.items(), desc=f"checking {name} images", unit=" images",
                         leave=False, mininterval=2.0):
        if not ref.exists():
            log.report("missing_image", ref.path, f"image {key}", "image file not found")
            continue
        problem = image_problem(ref.read())
        if problem:
            log.report("bad_image", ref.path or ref.origin, f"image {key}", problem)
            continue
        kept[key] = len(images)
        images.append(ref)
    records = []
    for rec in plan.records:
        missing = [k for k in rec.image_keys if k not in kept]
        if missing:
            log.report("image_skipped", rec.file, rec.record, f"its image {missing[0]} was skipped")
            continue
        indices = [kept[k] for k in rec.image_keys]
        if len(indices) == 1:
            records.append({**rec.fields, "image_index": indices[0]})
        else:
            records.append({**rec.fields, **{f"image_index_{i}": v for i, v in enumerate(indices)}})
    return ResolvedSplit(images=images, records=records)
