"""Visual Genome QA in the VQAv2 label space, which the original adds to VQAv2 fine-tuning.

The original (src/utils/vgqa_split.py, src/utils/write_vgqa.py):
* Split the VG images so that no COCO Karpathy val/test image lands in train: a VG image that is
  a COCO image takes its Karpathy split (train and restval -> train); the others are shuffled
  (`random.seed(0)`) and held out from the end of the shuffled list until test, then val, have
  5,000 images; the rest is train. VG-QA "val" = val + test. `coco_images_only` keeps only the
  VG images that are COCO Karpathy images (the original's `vgqa_coco_*` files).
* Group an image's QA pairs by question. Answers are normalised as VQAv2's; only answers in the
  VQAv2 vocabulary count. A question is kept when they all agree (one distinct answer), as one
  record with that answer's label and score 1.0, under the qa_id of its first such pair.

Reading in the same order with the same seed gives the original's split image for image.
Dropped by protocol and counted in the summary: questions whose answers disagree, repeats of a
question about the same image (merged into one record), and images outside `coco_images_only`.
A question with no answer in the vocabulary is a bad record ("answer_not_in_vocab"), as for
VQAv2: skip that reason to drop those (many of VG's questions) as the original does.

Where this differs from write_vgqa.py (none of it changes labels or scores): questions are grouped
by their whitespace-stripped text (the original: the raw string); an empty question is a bad record
("empty_text"; the original keeps it); `answers` holds the pairs' raw answers (the original's .arrow
files, and so the .arrow source here, hold the one normalised in-vocabulary answer).
"""
from __future__ import annotations

import os
import random

from bridgetower_jax.data import vqa_answers
from bridgetower_jax.data.bad_records import BadRecordLog, load_json, require, wrong_format
from bridgetower_jax.data.raw.captions import visual_genome_file, visual_genome_image
from bridgetower_jax.data.raw.plan import CorpusPlan, SplitPlan, TextRecord

HELDOUT_IMAGES = 5000   # VG images held out for each of the original's val and test
SPLIT_SEED = 0
# COCO Karpathy split of a VG image that is a COCO image -> its split before val and test merge.
KARPATHY_TO_SPLIT = {"train": "train", "restval": "train", "val": "val", "test": "test"}


def read_vgqa(manual_dir: str, log: BadRecordLog, answer_vocabulary: list[str],
              coco_images_only: bool = False, karpathy_json: str | None = None,
              heldout_images: int = HELDOUT_IMAGES) -> CorpusPlan:
    """`question_answers.json`, `image_data.json` (top level or annotations/), images/VG_100K{,_2}/,
    and COCO Karpathy's `dataset_coco.json` (`karpathy_json`, default in `manual_dir`)."""
    if karpathy_json is None and not os.path.isfile(os.path.join(manual_dir, "dataset_coco.json")):
        raise FileNotFoundError(f"{manual_dir} has no dataset_coco.json (COCO Karpathy splits, which keep COCO "
                                "val/test images out of VG-QA train): put it there or pass --karpathy_json FILE")
    split_of_image = image_splits(manual_dir, log, karpathy_json or os.path.join(manual_dir, "dataset_coco.json"),
                                  coco_images_only, heldout_images)
    answer_to_label = {a: i for i, a in enumerate(answer_vocabulary)}
    path = visual_genome_file(manual_dir, "question_answers.json")
    content = load_json(path)
    if not isinstance(content, list):
        raise wrong_format(path, "a list of {'id': image id, 'qas': [...]} objects")
    splits = {"train": SplitPlan(), "val": SplitPlan()}
    for n, entry in enumerate(content):
        if not require(entry, ("id", "qas"), log, path, f"[{n}]"):
            continue
        image_id = entry["id"]
        if image_id not in split_of_image:
            log.report("missing_field", path, f"[{n}] (image id {image_id})",
                       "the image has no entry in image_data.json, which decides its split")
            continue
        if split_of_image[image_id] is None:
            log.note("VG images that are not COCO Karpathy images (coco_images_only)")
            continue
        split = splits[split_of_image[image_id]]
        for question, qas in _questions(entry["qas"], log, path, n).items():
            fields = _question_fields(question, qas, answer_to_label, log, path)
            if fields is None:
                continue
            ref = visual_genome_image(manual_dir, str(image_id), path)
            split.add_image(ref)
            split.records.append(TextRecord(fields={**fields, "image_id": ref.key}, image_keys=(ref.key,),
                                            file=path, record=f"qa_id={fields['question_id']}"))
    return CorpusPlan(kind="vqa", splits=splits, log=log, answer_vocabulary=list(answer_vocabulary))


def _questions(qas, log: BadRecordLog, path: str, n: int) -> dict[str, list[dict]]:
    """An image's QA pairs grouped by question text, in order of first appearance."""
    questions: dict[str, list[dict]] = {}
    for k, qa in enumerate(qas if isinstance(qas, list) else []):
        if not require(qa, ("qa_id", "question", "answer"), log, path, f"[{n}].qas[{k}]"):
            continue
        question = qa["question"].strip() if isinstance(qa["question"], str) else ""
        if not question:
            log.report("empty_text", path, f"qa_id={qa['qa_id']}", "empty question")
            continue
        questions.setdefault(question, []).append(qa)
    return questions


def _question_fields(question: str, qas: list[dict], answer_to_label: dict[str, int], log: BadRecordLog,
                     path: str) -> dict | None:
    """The record of one question of one image, or None when the protocol drops it."""
    if len(qas) > 1:
        log.note("repeats of a VG-QA question about the same image (merged)", len(qas) - 1)
    answers = [qa["answer"] if isinstance(qa["answer"], str) else "" for qa in qas]
    in_vocabulary = [(qa, a) for qa, a in zip(qas, map(vqa_answers.normalize_answer, answers))
                     if a in answer_to_label]
    if not in_vocabulary:
        log.report("answer_not_in_vocab", path, f"qa_id={qas[0]['qa_id']}",
                   f"none of the answers {sorted(set(answers))} is in the {len(answer_to_label)}-answer "
                   "VQAv2 vocabulary")
        return None
    if len({a for _, a in in_vocabulary}) > 1:
        log.note("VG-QA questions whose answers disagree")
        return None
    qa, answer = in_vocabulary[0]
    return {"text": question, "question_id": int(qa["qa_id"]), "answers": answers,
            "answer_labels": [answer_to_label[answer]], "answer_scores": [1.0], "answer_type": ""}


def image_splits(manual_dir: str, log: BadRecordLog, karpathy_json: str, coco_images_only: bool,
                 heldout_images: int = HELDOUT_IMAGES) -> dict[int, str | None]:
    """VG image id -> "train" | "val" (None: left out by `coco_images_only`), as vgqa_split.py."""
    path = visual_genome_file(manual_dir, "image_data.json")
    content = load_json(path)
    if not isinstance(content, list):
        raise wrong_format(path, "a list of {'image_id', 'coco_id', ...} objects")
    karpathy = karpathy_splits(karpathy_json, log)
    split_of: dict[int, str | None] = {}
    remainder = []   # image_data.json order: the shuffle below then matches the original's
    for n, item in enumerate(content):
        image_id = item.get("image_id", item.get("id")) if isinstance(item, dict) else None
        if image_id is None:
            log.report("missing_field", path, f"[{n}]", "missing field 'image_id' (or 'id')")
            continue
        coco_split = KARPATHY_TO_SPLIT.get(karpathy.get(item.get("coco_id")))
        if coco_split:
            split_of[image_id] = coco_split
        elif coco_images_only:
            split_of[image_id] = None
        else:
            remainder.append(image_id)
    if not coco_images_only:
        random.Random(SPLIT_SEED).shuffle(remainder)
        for split in ("test", "val"):
            missing = heldout_images - sum(s == split for s in split_of.values())
            if missing > len(remainder):
                raise ValueError(f"{path}: {missing} more VG images are needed for the held-out {split} "
                                 f"images but only {len(remainder)} are left; lower heldout_images "
                                 "(--vgqa_heldout_images)")
            for _ in range(max(missing, 0)):
                split_of[remainder.pop()] = split
        split_of.update((image_id, "train") for image_id in remainder)
    return {image_id: "val" if s == "test" else s for image_id, s in split_of.items()}


def karpathy_splits(path: str, log: BadRecordLog) -> dict[int, str]:
    """COCO image id -> Karpathy split ("train", "restval", "val", "test") from dataset_coco.json."""
    content = load_json(path)
    if not isinstance(content, dict) or not isinstance(content.get("images"), list):
        raise wrong_format(path, "a Karpathy split file: an object with an 'images' list")
    splits = {}
    for n, entry in enumerate(content["images"]):
        if require(entry, ("cocoid", "split"), log, path, f"images[{n}]"):
            splits[entry["cocoid"]] = entry["split"]
    return splits
