"""Tiny raw-format fixtures for the data tests, written in each dataset's real on-disk format."""
from __future__ import annotations

import io
import json
import os

import numpy as np
import pyarrow as pa
from PIL import Image

from bridgetower_jax.data.tokenizer import train_bpe_tokenizer


def image_bytes(seed: int, fmt: str = "JPEG", size=(40, 32)) -> bytes:
    """A distinct solid-colour image per seed (so decoded images identify their source)."""
    colour = tuple(int(c) for c in np.random.default_rng(seed).integers(0, 256, 3))
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def write_file(path: str, data: bytes | str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return path


def write_json(path: str, obj) -> str:
    return write_file(path, json.dumps(obj))


def write_jsonl(path: str, rows) -> str:
    return write_file(path, "".join(json.dumps(r) + "\n" for r in rows))


# ---- COCO / Flickr30K Karpathy --------------------------------------------------------------------

COCO_IMAGES = [  # (filepath, filename, split, captions)
    ("train2014", "COCO_train2014_000000000001.jpg", "train", ["a cat.", "a cat on a mat.", "a cat."]),
    ("train2014", "COCO_train2014_000000000002.jpg", "train", ["two dogs.", "dogs playing."]),
    ("val2014", "COCO_val2014_000000000003.jpg", "restval", ["a red bus."]),
    ("val2014", "COCO_val2014_000000000004.jpg", "test", ["a tree.", "green tree."]),
]


def write_coco_karpathy(root: str, images=COCO_IMAGES) -> str:
    entries, sentid = [], 0
    for imgid, (filepath, filename, split, captions) in enumerate(images):
        write_file(os.path.join(root, filepath, filename), image_bytes(imgid))
        sentences = [{"raw": c, "tokens": c.split(), "imgid": imgid, "sentid": sentid + k}
                     for k, c in enumerate(captions)]
        sentid += len(captions)
        entries.append({"filepath": filepath, "filename": filename, "imgid": imgid, "split": split,
                        "cocoid": imgid + 1, "sentids": [s["sentid"] for s in sentences],
                        "sentences": sentences})
    write_json(os.path.join(root, "dataset_coco.json"), {"images": entries, "dataset": "coco"})
    return root


# ---- VQAv2 ---------------------------------------------------------------------------------------

def vqa_annotation(question_id, image_id, answers, answer_type="other"):
    return {"question_id": question_id, "image_id": image_id, "question_type": "what",
            "answer_type": answer_type, "multiple_choice_answer": max(set(answers), key=answers.count),
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                        for i, a in enumerate(answers)]}


def write_vqav2(root: str, train_questions=None, train_annotations=None) -> str:
    """train2014: images 1, 2; val2014: image 3. Answers chosen to exercise the soft scores."""
    for image_id, subtype in ((1, "train2014"), (2, "train2014"), (3, "val2014")):
        write_file(os.path.join(root, subtype, f"COCO_{subtype}_{image_id:012d}.jpg"), image_bytes(image_id))
    train_questions = train_questions or [
        {"image_id": 1, "question": "What color is the cat?", "question_id": 1000},
        {"image_id": 1, "question": "How many cats?", "question_id": 1001},
        {"image_id": 2, "question": "Is it a dog?", "question_id": 2000},
    ]
    train_annotations = train_annotations or [
        vqa_annotation(1000, 1, ["black"] * 7 + ["Black."] * 1 + ["white"] * 2),
        vqa_annotation(1001, 1, ["two"] * 3 + ["2"] * 6 + ["black"], "number"),
        vqa_annotation(2000, 2, ["yes"] * 10, "yes/no"),
    ]
    val_questions = [{"image_id": 3, "question": "What color is the bus?", "question_id": 3000}]
    val_annotations = [vqa_annotation(3000, 3, ["white"] * 4 + ["black"] * 6)]
    for subtype, questions, answered in (("train2014", train_questions, train_annotations),
                                         ("val2014", val_questions, val_annotations)):
        write_json(os.path.join(root, f"v2_OpenEnded_mscoco_{subtype}_questions.json"),
                   {"task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": subtype,
                    "questions": questions})
        write_json(os.path.join(root, f"v2_mscoco_{subtype}_annotations.json"),
                   {"data_subtype": subtype, "annotations": answered})
    return root


# ---- Visual Genome QA ----------------------------------------------------------------------------

# (VG image id, COCO id or None, image folder). COCO 101-104 are Karpathy train, restval, val,
# test; COCO 999 is in no Karpathy split, so image 20 is split like the non-COCO images 14-19.
VGQA_IMAGES = [(10, 101, "VG_100K"), (11, 102, "VG_100K"), (12, 103, "VG_100K_2"), (13, 104, "VG_100K_2"),
               *((i, None, "VG_100K") for i in range(14, 20)), (20, 999, "VG_100K_2")]
VGQA_KARPATHY = {101: "train", 102: "restval", 103: "val", 104: "test", 105: "test"}
# Every image has qa_id 100 * image id "Is it sunny?" -> "Yes."; besides (qa_id, question, answer):
VGQA_EXTRA_QAS = {
    10: [(1001, "How many dogs?", "two"), (1002, "How many dogs?", "2"),           # one answer: kept once
         (1003, "What color is the car?", "Black."), (1004, "What color is the car?", "white"),
         (1005, "What is the man holding?", "umbrella"),                           # no answer in vocabulary
         (1006, "How many birds?", "2"), (1007, "How many birds?", "yes")],       # answers disagree
    12: [(1201, "What color is the sky?", "black")],
}


def write_vgqa(root: str, images=VGQA_IMAGES, extra_qas=VGQA_EXTRA_QAS) -> str:
    """question_answers.json in annotations/ (the original's layout), image_data.json at the top,
    COCO Karpathy's dataset_coco.json, images in images/VG_100K{,_2}/."""
    question_answers, image_data = [], []
    for image_id, coco_id, folder in images:
        qas = [(100 * image_id, "Is it sunny?", "Yes."), *extra_qas.get(image_id, [])]
        question_answers.append({"id": image_id, "qas": [
            {"qa_id": q, "image_id": image_id, "question": question, "answer": answer, "a_objects": [],
             "q_objects": []} for q, question, answer in qas]})
        url = f"https://cs.stanford.edu/people/rak248/{folder}/{image_id}.jpg"
        image_data.append({"image_id": image_id, "url": url, "width": 40, "height": 32, "coco_id": coco_id,
                           "flickr_id": None})
        write_file(os.path.join(root, "images", folder, f"{image_id}.jpg"), image_bytes(image_id))
    write_json(os.path.join(root, "annotations", "question_answers.json"), question_answers)
    write_json(os.path.join(root, "image_data.json"), image_data)
    karpathy = [{"filepath": "val2014", "filename": f"COCO_val2014_{coco_id:012d}.jpg", "imgid": n,
                 "cocoid": coco_id, "split": split, "sentids": [], "sentences": []}
                for n, (coco_id, split) in enumerate(VGQA_KARPATHY.items())]
    write_json(os.path.join(root, "dataset_coco.json"), {"dataset": "coco", "images": karpathy})
    return root


# ---- NLVR2 / SNLI-VE -----------------------------------------------------------------------------

def write_nlvr2(root: str) -> str:
    rows = {"train": [{"identifier": "train-7-0-0", "sentence": "one cat.", "label": "True", "directory": 3},
                      {"identifier": "train-7-0-1", "sentence": "two cats.", "label": "False", "directory": 3},
                      {"identifier": "train-8-1-0", "sentence": "a dog.", "label": "False", "directory": 4}],
            "dev": [{"identifier": "dev-1-0-0", "sentence": "a bird.", "label": "True"}]}
    seed = 0
    for split, split_rows in rows.items():
        write_jsonl(os.path.join(root, "data", f"{split}.json"), split_rows)
        for row in split_rows:
            pair = row["identifier"].rsplit("-", 1)[0]
            folder = os.path.join(root, "images", split, *([str(row["directory"])] if "directory" in row else []))
            for side in (0, 1):
                path = os.path.join(folder, f"{pair}-img{side}.png")
                if not os.path.exists(path):
                    write_file(path, image_bytes(100 + seed, "PNG"))
                    seed += 1
    return root


def write_snli_ve(root: str) -> str:
    rows = {"train": [("11", "a man.", "a person.", "entailment"), ("11", "a man.", "a woman.", "contradiction"),
                      ("12", "a dog.", "a happy dog.", "neutral")],
            "dev": [("13", "a car.", "a vehicle.", "entailment")]}
    for split, split_rows in rows.items():
        write_jsonl(os.path.join(root, f"snli_ve_{split}.jsonl"),
                    [{"Flickr30K_ID": f, "sentence1": p, "sentence2": h, "gold_label": l, "pairID": f"{f}#{k}"}
                     for k, (f, p, h, l) in enumerate(split_rows)])
        for f, *_ in split_rows:
            write_file(os.path.join(root, "flickr30k-images", f"{f}.jpg"), image_bytes(int(f)))
    return root


# ---- VG / SBU / CC -------------------------------------------------------------------------------

def write_visual_genome(root: str) -> str:
    write_json(os.path.join(root, "region_descriptions.json"), [
        {"id": 5, "regions": [{"region_id": 1, "image_id": 5, "phrase": "a window", "x": 0, "y": 0,
                               "width": 3, "height": 3},
                              {"region_id": 2, "image_id": 5, "phrase": "a door", "x": 1, "y": 1,
                               "width": 3, "height": 3}]},
        {"id": 6, "regions": [{"region_id": 3, "image_id": 6, "phrase": "sky", "x": 0, "y": 0,
                               "width": 3, "height": 3}]}])
    write_file(os.path.join(root, "images", "VG_100K", "5.jpg"), image_bytes(5))
    write_file(os.path.join(root, "images", "VG_100K_2", "6.jpg"), image_bytes(6))
    return root


def write_sbu(root: str) -> str:
    write_json(os.path.join(root, "sbu-captions-all.json"), {
        "image_urls": ["http://x.org/a/1.jpg", "http://x.org/b/2.jpg"],
        "captions": ["a boat on a lake", "my old car"], "user_ids": ["u", "v"]})
    write_file(os.path.join(root, "images", "1.jpg"), image_bytes(1))
    write_file(os.path.join(root, "images", "2.jpg"), image_bytes(2))
    return root


def write_conceptual_captions(root: str) -> str:
    write_file(os.path.join(root, "Train_GCC-training.tsv"), "a photo of a tree\thttp://x/1\nsunset\thttp://x/2\n")
    write_file(os.path.join(root, "images", "train", "00000000.jpg"), image_bytes(10))
    write_file(os.path.join(root, "images", "train", "00000001.jpg"), image_bytes(11))
    return root


# ---- ViLT / BridgeTower .arrow files --------------------------------------------------------------

def write_arrow(path: str, columns: dict) -> str:
    table = pa.table(columns)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with pa.OSFile(path, "wb") as sink, pa.RecordBatchFileWriter(sink, table.schema) as writer:
        writer.write_table(table)
    return path


def write_caption_arrow(path: str, rows, split: str) -> str:
    """rows: (image bytes, captions, image_id)."""
    return write_arrow(path, {
        "image": pa.array([r[0] for r in rows], pa.binary()),
        "caption": pa.array([r[1] for r in rows], pa.list_(pa.string())),
        "image_id": pa.array([r[2] for r in rows], pa.string()),
        "split": pa.array([split] * len(rows), pa.string())})


def write_vqav2_arrow(path: str, rows) -> str:
    """rows: (image bytes, image_id, questions, question_ids, answers, labels, scores); also the
    layout of the original's vgqa_*.arrow files."""
    return write_arrow(path, {
        "image": pa.array([r[0] for r in rows], pa.binary()),
        "questions": pa.array([r[2] for r in rows], pa.list_(pa.string())),
        "answers": pa.array([r[4] for r in rows], pa.list_(pa.list_(pa.string()))),
        "answer_labels": pa.array([r[5] for r in rows], pa.list_(pa.list_(pa.int64()))),
        "answer_scores": pa.array([r[6] for r in rows], pa.list_(pa.list_(pa.float64()))),
        "image_id": pa.array([r[1] for r in rows], pa.int64()),
        "question_id": pa.array([r[3] for r in rows], pa.list_(pa.int64())),
        "split": pa.array(["train"] * len(rows), pa.string())})


def write_nlvr2_arrow(path: str, rows) -> str:
    """rows: (png 0, png 1, sentences, answers, identifier)."""
    return write_arrow(path, {
        "image_0": pa.array([r[0] for r in rows], pa.binary()),
        "image_1": pa.array([r[1] for r in rows], pa.binary()),
        "questions": pa.array([r[2] for r in rows], pa.list_(pa.string())),
        "answers": pa.array([r[3] for r in rows], pa.list_(pa.string())),
        "identifier": pa.array([r[4] for r in rows], pa.string())})


def write_snli_arrow(path: str, rows) -> str:
    """rows: (image bytes, [[premise, hypothesis], ...], labels)."""
    return write_arrow(path, {
        "image": pa.array([r[0] for r in rows], pa.binary()),
        "sentences": pa.array([r[1] for r in rows], pa.list_(pa.list_(pa.string()))),
        "labels": pa.array([r[2] for r in rows], pa.list_(pa.int64()))})


def tiny_tokenizer(out_dir: str, lines) -> str:
    return train_bpe_tokenizer(list(lines), out_dir, vocab_size=400)
