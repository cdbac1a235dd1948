"""The ViLT / METER / BridgeTower `.arrow` files (one row per image, texts in list columns).

Read exactly as the original reads them (Arrow IPC file format, memory-mapped), and turned into
the same `CorpusPlan` as the raw JSON readers, so both paths write identical datasets.
"""
from __future__ import annotations

import glob
import os
import re

import pyarrow as pa

from bridgetower_jax.data import vqa_answers
from bridgetower_jax.data.bad_records import BadRecordLog, wrong_format
from bridgetower_jax.data.raw.captions import add_image_captions
from bridgetower_jax.data.raw.plan import CorpusPlan, ImageRef, SplitPlan, TextRecord
from bridgetower_jax.data.raw.snli_ve import LABEL_NAMES as SNLI_LABEL_NAMES

# dataset -> {split: file-name glob}, in the original writers' naming.
ARROW_FILES = {
    "coco_karpathy": {s: f"coco_caption_karpathy_{s}.arrow" for s in ("train", "restval", "val", "test")},
    "f30k_karpathy": {s: f"f30k_caption_karpathy_{s}.arrow" for s in ("train", "val", "test")},
    "visual_genome": {"train": "vg.arrow"},
    "sbu": {"train": "sbu_[0-9]*.arrow"},
    "conceptual_captions": {s: f"conceptual_caption_{s}_[0-9]*.arrow" for s in ("train", "val")},
    "vqav2": {"train": "vqav2_train*.arrow", "val": "vqav2_val*.arrow", "test": "vqav2_test.arrow",
              "test_dev": "vqav2_test-dev.arrow"},
    # src/utils/write_vgqa.py: all VG images, or only those that are COCO images.
    "vgqa": {s: f"vgqa_{s}.arrow" for s in ("train", "val")},
    "vgqa_coco": {s: f"vgqa_coco_{s}.arrow" for s in ("train", "val")},
    "nlvr2": {s: f"nlvr2_{s}.arrow" for s in ("train", "dev", "test1")},
    "snli_ve": {s: f"snli_{s}.arrow" for s in ("train", "dev", "test")},
}
UNANSWERED_SPLITS = ("test", "test_dev")   # VQA splits whose answers are not published


def read_table(path: str) -> pa.Table:
    try:
        return pa.ipc.RecordBatchFileReader(pa.memory_map(path, "r")).read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise wrong_format(path, f"an Arrow IPC file as the ViLT/BridgeTower writers produce ({e})") from None


def split_files(manual_dir: str, dataset: str) -> dict[str, list[str]]:
    found = {}
    for split, pattern in ARROW_FILES[dataset].items():
        paths = sorted(glob.glob(os.path.join(manual_dir, pattern)))
        if dataset == "vqav2" and split in ("train", "val"):
            # The original's `_fix` files (normalised answers) win over the ViLT ones; skip the
            # ViLT protocol's trainable_val / rest_val subsets of val.
            exact = [p for p in paths if re.fullmatch(rf"vqav2_{split}(_fix)?\.arrow", os.path.basename(p))]
            fixed = [p for p in exact if p.endswith("_fix.arrow")]
            paths = fixed or exact
        if paths:
            found[split] = paths
    if not found:
        raise FileNotFoundError(f"no {dataset} .arrow files ({list(ARROW_FILES[dataset].values())}) in {manual_dir}")
    return found


def _columns(table: pa.Table, path: str, names: tuple[str, ...]) -> list:
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise wrong_format(path, f"columns {list(names)} (missing {missing})")
    return [table.column(n) if n.startswith("image") else table.column(n).to_pylist() for n in names]


def read_caption_arrows(manual_dir: str, dataset: str, log: BadRecordLog) -> CorpusPlan:
    splits = {}
    for split_name, paths in split_files(manual_dir, dataset).items():
        split = splits.setdefault(split_name, SplitPlan())
        for path in paths:
            table = read_table(path)
            images, captions, image_ids = _columns(table, path, ("image", "caption", "image_id"))
            for row, (texts, image_id) in enumerate(zip(captions, image_ids)):
                ref = ImageRef(key=str(image_id), origin=path, arrow_column=images, arrow_row=row)
                add_image_captions(split, ref, texts or [], log, path, f"row {row} (image_id {image_id})")
    return CorpusPlan(kind="captions", splits=splits, log=log)


def read_vqa_arrows(manual_dir: str, dataset: str, log: BadRecordLog,
                    answer_vocabulary: list[str] | None = None) -> CorpusPlan:
    """vqav2 / vgqa / vgqa_coco .arrow files.

    Without `answer_vocabulary` the files' own labels and scores are kept, and the vocabulary is
    recovered from their (answer, label) pairs (vqav2 only: a vgqa file alone does not hold the
    whole VQAv2 vocabulary). With it, labels and scores are recomputed from the answer strings
    and scores, so that the records share that vocabulary's label space.
    """
    files = split_files(manual_dir, dataset)
    tables = {s: [(p, read_table(p)) for p in paths] for s, paths in files.items()}
    answered = [s for s in tables if s not in UNANSWERED_SPLITS]
    if answer_vocabulary is None:
        if dataset != "vqav2":
            raise ValueError(f"{dataset} labels are in the VQAv2 label space: build vqav2 into the same --data_dir "
                             "first, or pass its answer vocabulary with --answer_vocab FILE")
        vocabulary, answer_to_label = _vocabulary_of_labels(tables, answered), None
    else:
        vocabulary = list(answer_vocabulary)
        answer_to_label = {a: i for i, a in enumerate(vocabulary)}
    splits = {}
    for split_name, split_tables in tables.items():
        split = splits.setdefault(split_name, SplitPlan())
        has_answers = split_name in answered
        for path, table in split_tables:
            images, questions, image_ids, question_ids = _columns(
                table, path, ("image", "questions", "image_id", "question_id"))
            answers, labels, scores = (_columns(table, path, ("answers", "answer_labels", "answer_scores"))
                                       if has_answers else ([], [], []))
            for row in range(len(table)):
                ref = ImageRef(key=str(image_ids[row]), origin=path, arrow_column=images, arrow_row=row)
                split.add_image(ref)
                for k, question in enumerate(questions[row] or []):
                    record = f"row {row} question_id={question_ids[row][k]}"
                    if not (question or "").strip():
                        log.report("empty_text", path, record, "empty question")
                        continue
                    # The files keep only the distinct in-vocabulary answers, with their scores.
                    row_answers = [str(a) for a in _nth(answers, row, k)]
                    targets = ([], [])
                    if has_answers:
                        targets = _question_targets(row_answers, _nth(labels, row, k), _nth(scores, row, k),
                                                    vocabulary, answer_to_label, log, path, record)
                        if targets is None:
                            continue
                    split.records.append(TextRecord(
                        fields={"text": question.strip(), "question_id": int(question_ids[row][k]),
                                "image_id": ref.key, "answers": row_answers, "answer_labels": targets[0],
                                "answer_scores": targets[1], "answer_type": ""},
                        image_keys=(ref.key,), file=path, record=record))
    return CorpusPlan(kind="vqa", splits=splits, log=log, answer_vocabulary=vocabulary)


def _question_targets(answers: list[str], labels: list, scores: list, vocabulary: list[str],
                      answer_to_label: dict[str, int] | None, log: BadRecordLog, path: str, record: str):
    """(labels, scores) of one question: the file's own, or recomputed over `answer_to_label`;
    None once the reason it has none is reported."""
    if answer_to_label is None:
        labels = [int(l) for l in labels]
        if not labels:
            log.report("answer_not_in_vocab", path, record, "no answer label in the vocabulary")
            return None
        bad = [l for l in labels if not 0 <= l < len(vocabulary)]
        if bad:
            log.report("answer_not_in_vocab", path, record,
                       f"answer labels {bad} outside 0..{len(vocabulary) - 1}")
            return None
        return labels, [float(v) for v in scores]
    try:
        labels, scores = vqa_answers.soft_targets_from_scores(answers, scores, answer_to_label)
    except ValueError as e:
        log.report("bad_label", path, record, str(e))
        return None
    if not labels:
        log.report("answer_not_in_vocab", path, record, f"none of the answers {sorted(set(answers))} is in "
                   f"the {len(vocabulary)}-answer vocabulary")
        return None
    return labels, scores


def _vocabulary_of_labels(tables: dict, answered: list[str]) -> list[str]:
    """Label id -> answer from the files' (answer, label) pairs (the original's VQAv2DataModule)."""
    answer_of_label: dict[int, str] = {}
    for split in answered:
        for path, table in tables[split]:
            answers, labels = _columns(table, path, ("answers", "answer_labels"))
            for row_answers, row_labels in zip(answers, labels):
                for a, l in zip(_flatten(row_answers), _flatten(row_labels)):
                    answer_of_label.setdefault(int(l), a)
    size = max(answer_of_label) + 1 if answer_of_label else 0
    return [answer_of_label.get(i, f"<unused answer {i}>") for i in range(size)]


def read_nlvr2_arrows(manual_dir: str, log: BadRecordLog) -> CorpusPlan:
    splits = {}
    for split_name, paths in split_files(manual_dir, "nlvr2").items():
        split = splits.setdefault(split_name, SplitPlan())
        for path in paths:
            table = read_table(path)
            image_0, image_1, sentences, answers, identifiers = _columns(
                table, path, ("image_0", "image_1", "questions", "answers", "identifier"))
            for row, identifier in enumerate(identifiers):
                refs = [ImageRef(key=f"{identifier}-img{side}", origin=path, arrow_column=col, arrow_row=row)
                        for side, col in enumerate((image_0, image_1))]
                for ref in refs:
                    split.add_image(ref)
                for k, (sentence, answer) in enumerate(zip(sentences[row], answers[row])):
                    record = f"row {row} ({identifier}) sentence {k}"
                    if not (sentence or "").strip():
                        log.report("empty_text", path, record, "empty sentence")
                        continue
                    if answer not in ("True", "False"):
                        log.report("bad_label", path, record, f"answer {answer!r} is not 'True'/'False'")
                        continue
                    split.records.append(TextRecord(
                        fields={"text": sentence.strip(), "identifier": f"{identifier}-{k}",
                                "label": int(answer == "True")},
                        image_keys=tuple(r.key for r in refs), file=path, record=record))
    return CorpusPlan(kind="nlvr2", splits=splits, log=log)


def read_snli_ve_arrows(manual_dir: str, log: BadRecordLog) -> CorpusPlan:
    splits = {}
    for split_name, paths in split_files(manual_dir, "snli_ve").items():
        split = splits.setdefault(split_name, SplitPlan())
        for path in paths:
            table = read_table(path)
            images, sentences, labels = _columns(table, path, ("image", "sentences", "labels"))
            stem = os.path.basename(path)
            for row in range(len(table)):
                ref = ImageRef(key=f"{stem}:{row}", origin=path, arrow_column=images, arrow_row=row)
                split.add_image(ref)
                for k, (pair, label) in enumerate(zip(sentences[row], labels[row])):
                    record = f"row {row} pair {k}"
                    hypothesis = (pair[1] if pair and len(pair) > 1 else "") or ""
                    if not hypothesis.strip():
                        log.report("empty_text", path, record, "empty hypothesis")
                        continue
                    if not 0 <= int(label) < len(SNLI_LABEL_NAMES):
                        log.report("bad_label", path, record, f"label {label} not in 0..2")
                        continue
                    split.records.append(TextRecord(
                        fields={"text": hypothesis.strip(), "premise": pair[0] or "", "image_id": ref.key,
                                "label": int(label)},
                        image_keys=(ref.key,), file=path, record=record))
    return CorpusPlan(kind="snli_ve", splits=splits, log=log)


def _flatten(nested) -> list:
    return [x for inner in (nested or []) for x in (inner or [])]


def _nth(column: list, row: int, k: int) -> list:
    """The k-th question's list in a per-row list-of-lists column ([] when absent)."""
    if row >= len(column) or not column[row] or k >= len(column[row]):
        return []
    return column[row][k] or []
