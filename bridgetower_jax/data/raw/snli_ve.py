"""SNLI-VE from `snli_ve_{train,dev,test}.jsonl` and `flickr30k-images/`.

The image is the premise; the text is the hypothesis (`sentence2`), as in the original.
"""
from __future__ import annotations

import os

from bridgetower_jax.data.bad_records import BadRecordLog, load_json_lines, require
from bridgetower_jax.data.raw.plan import CorpusPlan, ImageRef, SplitPlan, TextRecord

SNLI_VE_SPLITS = ("train", "dev", "test")
LABEL_NAMES = ("contradiction", "neutral", "entailment")


def read_snli_ve(manual_dir: str, log: BadRecordLog) -> CorpusPlan:
    splits = {}
    for split_name in SNLI_VE_SPLITS:
        path = os.path.join(manual_dir, f"snli_ve_{split_name}.jsonl")
        if not os.path.isfile(path):
            continue
        split = splits.setdefault(split_name, SplitPlan())
        for line, row in load_json_lines(path, log):
            record = f"line {line} ({row.get('pairID', row.get('Flickr30K_ID', '?'))})"
            if not require(row, ("Flickr30K_ID", "sentence2", "gold_label"), log, path, record):
                continue
            hypothesis = row["sentence2"].strip() if isinstance(row["sentence2"], str) else ""
            if not hypothesis:
                log.report("empty_text", path, record, "empty hypothesis")
                continue
            if row["gold_label"] not in LABEL_NAMES:
                log.report("bad_label", path, record, f"gold_label {row['gold_label']!r} not in {LABEL_NAMES}")
                continue
            file_name = f"{row['Flickr30K_ID']}.jpg"
            ref = ImageRef(key=file_name, origin=path, path=os.path.join(manual_dir, "flickr30k-images", file_name))
            split.add_image(ref)
            split.records.append(TextRecord(
                fields={"text": hypothesis, "premise": str(row.get("sentence1", "")),
                        "image_id": file_name, "label": LABEL_NAMES.index(row["gold_label"])},
                image_keys=(ref.key,), file=path, record=record))
    if not splits:
        raise FileNotFoundError(f"no snli_ve_{{train,dev,test}}.jsonl in {manual_dir}")
    return CorpusPlan(kind="snli_ve", splits=splits, log=log)
