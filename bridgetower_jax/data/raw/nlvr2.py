"""NLVR2 from `data/{train,dev,test1}.json` (JSON lines) and the image-pair PNGs.

Identifier `train-10171-0-0` = pair `train-10171-0` + sentence index; the pair's images are
`images/train/<directory>/<pair>-img0.png` (train) or `images/<split>/<pair>-img1.png`.
"""
from __future__ import annotations

import os

from bridgetower_jax.data.bad_records import BadRecordLog, load_json_lines, require
from bridgetower_jax.data.raw.plan import CorpusPlan, ImageRef, SplitPlan, TextRecord

NLVR2_SPLITS = ("train", "dev", "test1")
LABELS = {"False": 0, "True": 1}


def read_nlvr2(manual_dir: str, log: BadRecordLog) -> CorpusPlan:
    splits = {}
    for split_name in NLVR2_SPLITS:
        path = os.path.join(manual_dir, "data", f"{split_name}.json")
        if not os.path.isfile(path):
            continue
        split = splits.setdefault(split_name, SplitPlan())
        for line, row in load_json_lines(path, log):
            record = f"line {line} ({row.get('identifier', '?')})"
            if not require(row, ("identifier", "sentence", "label"), log, path, record):
                continue
            sentence = row["sentence"].strip() if isinstance(row["sentence"], str) else ""
            if not sentence:
                log.report("empty_text", path, record, "empty sentence")
                continue
            label = str(row["label"])
            if label not in LABELS:
                log.report("bad_label", path, record, f"label {row['label']!r} is not 'True'/'False'")
                continue
            pair = row["identifier"].rsplit("-", 1)[0]
            folder = os.path.join(manual_dir, "images", split_name,
                                  *([str(row["directory"])] if "directory" in row else []))
            refs = [ImageRef(key=f"{pair}-img{side}", origin=path,
                             path=os.path.join(folder, f"{pair}-img{side}.png")) for side in (0, 1)]
            for ref in refs:
                split.add_image(ref)
            split.records.append(TextRecord(
                fields={"text": sentence, "identifier": row["identifier"], "label": LABELS[label]},
                image_keys=tuple(r.key for r in refs), file=path, record=record))
    if not splits:
        raise FileNotFoundError(f"no data/{{train,dev,test1}}.json in {manual_dir}")
    return CorpusPlan(kind="nlvr2", splits=splits, log=log)
