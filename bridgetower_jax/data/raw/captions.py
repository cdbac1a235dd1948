"""Caption corpora in their raw formats: Karpathy JSON (COCO, Flickr30K), VG, SBU, CC.

One text record per caption. Within an image, captions are de-duplicated keeping the first
occurrence (the original uses `list(set(...))`, whose order changes between processes).
"""
from __future__ import annotations

import csv
import os
from typing import Callable, Iterable

from bridgetower_jax.data.bad_records import BadRecordLog, load_json, require, wrong_format
from bridgetower_jax.data.raw.plan import CorpusPlan, ImageRef, SplitPlan, TextRecord


def add_image_captions(split: SplitPlan, image: ImageRef, texts: Iterable, log: BadRecordLog,
                       file: str, record: str) -> None:
    split.add_image(image)
    seen = set()
    for text in texts:
        text = text.strip() if isinstance(text, str) else ""
        if not text:
            log.report("empty_text", file, record, "empty caption")
            continue
        if text in seen:
            log.note("duplicate caption of the same image")
            continue
        seen.add(text)
        split.records.append(TextRecord(
            fields={"text": text, "image_id": image.key, "caption_index": len(seen) - 1},
            image_keys=(image.key,), file=file, record=record))


def read_karpathy(manual_dir: str, json_name: str, image_path: Callable[[dict], str],
                  log: BadRecordLog) -> CorpusPlan:
    """`dataset_coco.json` / `dataset_flickr30k.json` from Karpathy's caption_datasets.zip."""
    path = os.path.join(manual_dir, json_name)
    content = load_json(path)
    if not isinstance(content, dict) or "images" not in content:
        raise wrong_format(path, "a Karpathy split file: an object with an 'images' list")
    splits: dict[str, SplitPlan] = {}
    for n, entry in enumerate(content["images"]):
        record = f"images[{n}]"
        if not require(entry, ("filename", "split", "sentences"), log, path, record):
            continue
        record = f"images[{n}] (imgid={entry.get('imgid')}, {entry['filename']})"
        ref = ImageRef(key=entry["filename"], origin=path,
                       path=os.path.join(manual_dir, image_path(entry)))
        texts = [s.get("raw", "") if isinstance(s, dict) else "" for s in entry["sentences"]]
        add_image_captions(splits.setdefault(entry["split"], SplitPlan()), ref, texts, log, path, record)
    return CorpusPlan(kind="captions", splits=splits, log=log)


def read_coco_karpathy(manual_dir: str, log: BadRecordLog) -> CorpusPlan:
    return read_karpathy(manual_dir, "dataset_coco.json",
                         lambda e: os.path.join(e.get("filepath", ""), e["filename"]), log)


def read_f30k_karpathy(manual_dir: str, log: BadRecordLog) -> CorpusPlan:
    return read_karpathy(manual_dir, "dataset_flickr30k.json",
                         lambda e: os.path.join("flickr30k-images", e["filename"]), log)


def visual_genome_file(manual_dir: str, name: str) -> str:
    """A VG annotation file, at the top of `manual_dir` or in annotations/ (the original's layout)."""
    return _first_existing(manual_dir, (name, f"annotations/{name}"))


def visual_genome_image(manual_dir: str, image_id: str, origin: str) -> ImageRef:
    """images/VG_100K/<id>.jpg or images/VG_100K_2/<id>.jpg: the download comes in two parts."""
    candidates = [os.path.join(manual_dir, "images", d, f"{image_id}.jpg") for d in ("VG_100K", "VG_100K_2")]
    image_file = next((c for c in candidates if os.path.isfile(c)), candidates[0])
    return ImageRef(key=image_id, origin=origin, path=image_file)


def read_visual_genome(manual_dir: str, log: BadRecordLog) -> CorpusPlan:
    """`region_descriptions.json`; images in images/VG_100K or images/VG_100K_2."""
    path = visual_genome_file(manual_dir, "region_descriptions.json")
    split = SplitPlan()
    for n, entry in enumerate(load_json(path)):
        if not require(entry, ("id", "regions"), log, path, f"[{n}]"):
            continue
        image_id = str(entry["id"])
        ref = visual_genome_image(manual_dir, image_id, path)
        phrases = [r.get("phrase", "") for r in entry["regions"]]
        add_image_captions(split, ref, phrases, log, path, f"[{n}] (image id {image_id})")
    return CorpusPlan(kind="captions", splits={"train": split}, log=log)


def read_sbu(manual_dir: str, log: BadRecordLog) -> CorpusPlan:
    """`sbu-captions-all.json` ({image_urls, captions}); images/<URL basename>."""
    path = os.path.join(manual_dir, "sbu-captions-all.json")
    content = load_json(path)
    if not isinstance(content, dict) or not {"image_urls", "captions"} <= set(content):
        raise wrong_format(path, "an object with 'image_urls' and 'captions' lists")
    split = SplitPlan()
    for n, (url, caption) in enumerate(zip(content["image_urls"], content["captions"])):
        name = url.rstrip("/").rsplit("/", 1)[-1]
        ref = ImageRef(key=name, origin=path, path=os.path.join(manual_dir, "images", name))
        add_image_captions(split, ref, [caption], log, path, f"[{n}] ({name})")
    return CorpusPlan(kind="captions", splits={"train": split}, log=log)


CC_FILES = {"train": "Train_GCC-training.tsv", "val": "Validation_GCC-1.1.0-Validation.tsv"}


def read_conceptual_captions(manual_dir: str, log: BadRecordLog) -> CorpusPlan:
    """CC3M tsv (caption<TAB>url, no header); image of row i at images/<split>/<i:08d>.jpg."""
    splits = {}
    for split_name, file_name in CC_FILES.items():
        path = os.path.join(manual_dir, file_name)
        if not os.path.isfile(path):
            continue
        split = splits.setdefault(split_name, SplitPlan())
        with open(path, encoding="utf-8", newline="") as f:
            for row_number, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)):
                record = f"row {row_number}"
                if len(row) < 2:
                    log.report("missing_field", path, record, "expected caption<TAB>url")
                    continue
                key = f"{row_number:08d}"
                ref = ImageRef(key=key, origin=path,
                               path=os.path.join(manual_dir, "images", split_name, f"{key}.jpg"))
                add_image_captions(split, ref, [row[0]], log, path, record)
    if not splits:
        raise FileNotFoundError(f"none of {list(CC_FILES.values())} in {manual_dir}")
    return CorpusPlan(kind="captions", splits=splits, log=log)


def _first_existing(root: str, names: Iterable[str]) -> str:
    names = list(names)
    for name in names:
        if os.path.isfile(os.path.join(root, name)):
            return os.path.join(root, name)
    return os.path.join(root, names[0])  # load_json then names the missing file
