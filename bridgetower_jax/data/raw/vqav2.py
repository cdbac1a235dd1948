"""VQAv2 from the official question/annotation JSON files and the COCO image folders.

One text record per question. Train/val questions get the answer vocabulary's soft targets;
test questions have none. A train/val question none of whose answers is in the vocabulary is a
bad record ("answer_not_in_vocab"); the original drops those (skip that reason to do the same).
"""
from __future__ import annotations

import os

from bridgetower_jax.data import vqa_answers
from bridgetower_jax.data.bad_records import BadRecordLog, load_json, require, wrong_format
from bridgetower_jax.data.raw.plan import CorpusPlan, ImageRef, SplitPlan, TextRecord

# split -> (question file subtype, image folder, has annotations)
VQA_SPLITS = {
    "train": ("train2014", "train2014", True),
    "val": ("val2014", "val2014", True),
    "test": ("test2015", "test2015", False),
    "test_dev": ("test-dev2015", "test2015", False),
}


def questions_file(manual_dir: str, subtype: str) -> str:
    return os.path.join(manual_dir, f"v2_OpenEnded_mscoco_{subtype}_questions.json")


def annotations_file(manual_dir: str, subtype: str) -> str:
    return os.path.join(manual_dir, f"v2_mscoco_{subtype}_annotations.json")


def _load_list(path: str, key: str) -> list:
    content = load_json(path)
    if not isinstance(content, dict) or not isinstance(content.get(key), list):
        raise wrong_format(path, f"an object with a '{key}' list")
    return content[key]


def read_vqav2(manual_dir: str, log: BadRecordLog, answer_vocabulary: list[str] | None = None,
               min_answer_count: int = 9) -> CorpusPlan:
    present = {s: v for s, v in VQA_SPLITS.items() if os.path.isfile(questions_file(manual_dir, v[0]))}
    if not present:
        raise FileNotFoundError(f"no v2_OpenEnded_mscoco_*_questions.json in {manual_dir}")
    annotations = {s: _load_list(annotations_file(manual_dir, v[0]), "annotations")
                   for s, v in present.items() if v[2]}
    if answer_vocabulary is None:
        answer_vocabulary = vqa_answers.build_answer_vocabulary(
            (a.get("multiple_choice_answer", "") for split in ("train", "val")
             for a in annotations.get(split, [])), min_answer_count)
    answer_to_label = {a: i for i, a in enumerate(answer_vocabulary)}
    splits = {}
    for split_name, (subtype, image_dir, has_answers) in present.items():
        q_path = questions_file(manual_dir, subtype)
        a_path = annotations_file(manual_dir, subtype)
        by_question = {a.get("question_id"): a for a in annotations.get(split_name, [])}
        split = splits.setdefault(split_name, SplitPlan())
        for n, q in enumerate(_load_list(q_path, "questions")):
            if not require(q, ("image_id", "question", "question_id"), log, q_path, f"questions[{n}]"):
                continue
            record = f"question_id={q['question_id']}"
            question = q["question"].strip() if isinstance(q["question"], str) else ""
            if not question:
                log.report("empty_text", q_path, record, "empty question")
                continue
            fields = {"text": question, "question_id": int(q["question_id"]),
                      "image_id": str(q["image_id"]), "answers": [], "answer_labels": [],
                      "answer_scores": [], "answer_type": ""}
            if has_answers:
                annotation = by_question.get(q["question_id"])
                if annotation is None or not require(annotation, ("answers",), log, a_path, record):
                    if annotation is None:
                        log.report("missing_field", a_path, record, "no annotation for this question")
                    continue
                answers = [a.get("answer", "") for a in annotation["answers"]]
                labels, scores = vqa_answers.soft_targets(answers, answer_to_label)
                if not labels:
                    log.report("answer_not_in_vocab", a_path, record,
                               f"none of the answers {sorted(set(answers))} is in the "
                               f"{len(answer_vocabulary)}-answer vocabulary")
                    continue
                fields.update(answers=answers, answer_labels=labels, answer_scores=scores,
                              answer_type=annotation.get("answer_type", ""))
            file_name = f"COCO_{image_dir}_{int(q['image_id']):012d}.jpg"
            ref = ImageRef(key=file_name, origin=q_path,
                           path=os.path.join(manual_dir, image_dir, file_name))
            split.add_image(ref)
            split.records.append(TextRecord(fields=fields, image_keys=(ref.key,), file=q_path, record=record))
    return CorpusPlan(kind="vqa", splits=splits, log=log, answer_vocabulary=answer_vocabulary)
