"""Learnable demo corpus written in the *real* raw formats, so it goes through the real builders.

    python -m bridgetower_jax.data.demo --out DIR [--seed 0] [--coco_images 2000] ...

Layout of DIR (each sub-directory is the `--manual_dir` of one or more builders):
    coco/       dataset_coco.json (Karpathy), train2014/ val2014/ JPEGs,
                v2_OpenEnded_mscoco_{train,val}2014_questions.json, v2_mscoco_{train,val}2014_annotations.json
    flickr30k/  dataset_flickr30k.json (Karpathy), flickr30k-images/ JPEGs, snli_ve_{train,dev,test}.jsonl
    nlvr2/      data/{train,dev,test1}.json (JSON lines), images/{train/<dir>,dev,test1}/*-img{0,1}.png
    corpus.txt  every text, one a line (train the tokenizer on it)

Held-out data: Karpathy val/test (val2014 images) never appear in VQA train (train2014 images),
and NLVR2 dev/test1 and SNLI-VE dev/test use their own images. Deterministic for a seed: each
image's scene comes from its own generator seeded by (seed, dataset, index).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter

import numpy as np

from bridgetower_jax.data import demo_scenes as scenes

_DATASET_STREAM = {"coco": 1, "flickr30k": 2, "nlvr2": 3}


def _rng(seed: int, dataset: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _DATASET_STREAM[dataset], index])


def _split_of(index: int, n: int, fractions: dict[str, float]) -> str:
    edge = 0.0
    for split, fraction in fractions.items():
        edge += fraction * n
        if index < edge:
            return split
    return split


def _write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)


def _write_jsonl(path: str, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _karpathy_entry(filepath, filename, imgid, split, texts, first_sentid, cocoid=None):
    sentences = [{"raw": t, "tokens": t.rstrip(".").split(), "imgid": imgid, "sentid": first_sentid + k}
                 for k, t in enumerate(texts)]
    entry = {"filename": filename, "imgid": imgid, "split": split,
             "sentids": [s["sentid"] for s in sentences], "sentences": sentences}
    if filepath is not None:
        entry = {"filepath": filepath, **entry}
    if cocoid is not None:
        entry["cocoid"] = cocoid
    return entry


def write_coco(out: str, n_images: int, image_size: int, seed: int, corpus: list[str]) -> dict:
    """COCO Karpathy captions + VQAv2 questions/annotations over the same COCO-named JPEGs."""
    fractions = {"train": 0.7, "restval": 0.1, "val": 0.1, "test": 0.1}
    karpathy, sentid = [], 0
    vqa = {sub: {"questions": [], "annotations": []} for sub in ("train2014", "val2014")}
    for i in range(n_images):
        rng = _rng(seed, "coco", i)
        scene = scenes.random_scene(rng)
        split = _split_of(i, n_images, fractions)
        subtype = "train2014" if split == "train" else "val2014"
        image_id = 100000 + i
        filename = f"COCO_{subtype}_{image_id:012d}.jpg"
        os.makedirs(os.path.join(out, subtype), exist_ok=True)
        with open(os.path.join(out, subtype, filename), "wb") as f:
            f.write(scenes.encode_image(scenes.draw_scene(scene, image_size, rng), "JPEG"))
        texts = scenes.captions(scene, rng)
        karpathy.append(_karpathy_entry(subtype, filename, i, split, texts, sentid, cocoid=image_id))
        sentid += len(texts)
        corpus.extend(texts)
        for k, (question, answer, answer_type) in enumerate(scenes.vqa_questions(scene, rng)):
            question_id = image_id * 1000 + k
            answers = scenes.annotator_answers(answer, answer_type, rng)
            vqa[subtype]["questions"].append(
                {"image_id": image_id, "question": question, "question_id": question_id})
            vqa[subtype]["annotations"].append({
                "question_id": question_id, "image_id": image_id,
                "question_type": " ".join(question.split()[:2]), "answer_type": answer_type,
                "multiple_choice_answer": Counter(answers).most_common(1)[0][0],
                "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1}
                            for j, a in enumerate(answers)]})
            corpus.append(question)
    _write_json(os.path.join(out, "dataset_coco.json"), {"images": karpathy, "dataset": "coco"})
    for subtype, content in vqa.items():
        _write_json(os.path.join(out, f"v2_OpenEnded_mscoco_{subtype}_questions.json"), {
            "info": {"description": "bridgetower_jax demo"}, "task_type": "Open-Ended",
            "data_type": "mscoco", "data_subtype": subtype, "license": {},
            "questions": content["questions"]})
        _write_json(os.path.join(out, f"v2_mscoco_{subtype}_annotations.json"), {
            "info": {"description": "bridgetower_jax demo"}, "license": {}, "data_subtype": subtype,
            "annotations": content["annotations"]})
    return {"coco images": n_images, "vqa questions": sum(len(v["questions"]) for v in vqa.values())}


def write_flickr30k(out: str, n_images: int, image_size: int, seed: int, corpus: list[str]) -> dict:
    """Flickr30K Karpathy captions + SNLI-VE hypotheses (premise = a caption of the image)."""
    fractions = {"train": 0.8, "val": 0.1, "test": 0.1}
    snli_split = {"train": "train", "val": "dev", "test": "test"}
    karpathy, sentid = [], 0
    snli = {s: [] for s in snli_split.values()}
    os.makedirs(os.path.join(out, "flickr30k-images"), exist_ok=True)
    for i in range(n_images):
        rng = _rng(seed, "flickr30k", i)
        scene = scenes.random_scene(rng)
        split = _split_of(i, n_images, fractions)
        flickr_id = 2000000 + i
        filename = f"{flickr_id}.jpg"
        with open(os.path.join(out, "flickr30k-images", filename), "wb") as f:
            f.write(scenes.encode_image(scenes.draw_scene(scene, image_size, rng), "JPEG"))
        texts = scenes.captions(scene, rng)
        karpathy.append(_karpathy_entry(None, filename, i, split, texts, sentid))
        corpus.extend(texts)
        for k, (hypothesis, label) in enumerate(scenes.entailment_hypotheses(scene, rng)):
            snli[snli_split[split]].append({
                "Flickr30K_ID": str(flickr_id), "captionID": f"{filename}#{k}",
                "pairID": f"{filename}#{k}r{label[0]}", "sentence1": texts[k],
                "sentence2": hypothesis, "gold_label": label})
            corpus.append(hypothesis)
        sentid += len(texts)
    _write_json(os.path.join(out, "dataset_flickr30k.json"), {"images": karpathy, "dataset": "flickr30k"})
    for split, rows in snli.items():
        _write_jsonl(os.path.join(out, f"snli_ve_{split}.jsonl"), rows)
    return {"flickr30k images": n_images, "snli-ve pairs": sum(len(r) for r in snli.values())}


def write_nlvr2(out: str, n_pairs: int, image_size: int, seed: int, corpus: list[str]) -> dict:
    """NLVR2 JSON lines (identifier split-set-pair-sentence) and PNG image pairs."""
    fractions = {"train": 0.8, "dev": 0.1, "test1": 0.1}
    rows = {s: [] for s in fractions}
    for i in range(n_pairs):
        rng = _rng(seed, "nlvr2", i)
        split = _split_of(i, n_pairs, fractions)
        pair = [scenes.random_scene(rng) for _ in range(2)]
        pair_id = f"{split}-{i}-0"
        directory = str(i % 10) if split == "train" else None
        image_dir = os.path.join(out, "images", split, *([directory] if directory else []))
        os.makedirs(image_dir, exist_ok=True)
        for side, scene in enumerate(pair):
            with open(os.path.join(image_dir, f"{pair_id}-img{side}.png"), "wb") as f:
                f.write(scenes.encode_image(scenes.draw_scene(scene, image_size, rng), "PNG"))
        for k in range(2):
            sentence, label = scenes.nlvr2_statement(pair[0], pair[1], rng)
            row = {"identifier": f"{pair_id}-{k}", "sentence": sentence,
                   "label": "True" if label else "False", "synset": "shape", "query": "demo"}
            if directory is not None:
                row["directory"] = int(directory)
            rows[split].append(row)
            corpus.append(sentence)
    os.makedirs(os.path.join(out, "data"), exist_ok=True)
    for split, split_rows in rows.items():
        _write_jsonl(os.path.join(out, "data", f"{split}.json"), split_rows)
    return {"nlvr2 pairs": n_pairs, "nlvr2 sentences": sum(len(r) for r in rows.values())}


def write_demo(out: str, *, seed: int = 0, coco_images: int = 2000, flickr_images: int = 1000,
               nlvr2_pairs: int = 1000, image_size: int = 128) -> dict:
    corpus: list[str] = []
    summary = {}
    summary.update(write_coco(os.path.join(out, "coco"), coco_images, image_size, seed, corpus))
    summary.update(write_flickr30k(os.path.join(out, "flickr30k"), flickr_images, image_size, seed, corpus))
    summary.update(write_nlvr2(os.path.join(out, "nlvr2"), nlvr2_pairs, image_size, seed, corpus))
    with open(os.path.join(out, "corpus.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(corpus) + "\n")
    summary["corpus lines"] = len(corpus)
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Write the procedural demo corpus in real raw formats.")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--coco_images", type=int, default=2000)
    parser.add_argument("--flickr_images", type=int, default=1000)
    parser.add_argument("--nlvr2_pairs", type=int, default=1000)
    parser.add_argument("--image_size", type=int, default=128)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    summary = write_demo(args.out, seed=args.seed, coco_images=args.coco_images,
                         flickr_images=args.flickr_images, nlvr2_pairs=args.nlvr2_pairs,
                         image_size=args.image_size)
    for name, count in summary.items():
        print(f"{name:>18}: {count}")
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
