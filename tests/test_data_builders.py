"""Each builder on a tiny fixture in its real raw format (and the .arrow path) writes the expected records."""
import io
import os

import numpy as np
import pytest
from PIL import Image

import data_fixtures as fx
from bridgetower_jax.data import build, sources


def _texts(data_dir, dataset, split):
    part = sources.open_split(data_dir, dataset, split)
    return part, [part.texts[i] for i in range(len(part.texts))]


def _colour(data: bytes):
    return Image.open(io.BytesIO(data)).convert("RGB").getpixel((5, 5))


def _build(tmp_path, dataset, manual, **kw):
    return build.build(dataset, str(manual), str(tmp_path / "out"), **kw)


def test_coco_karpathy_one_record_per_caption_and_image_stored_once(tmp_path):
    fx.write_coco_karpathy(str(tmp_path / "raw"))
    summary = _build(tmp_path, "coco_karpathy", tmp_path / "raw")
    assert summary["written"] == {"images": {"train": 2, "restval": 1, "test": 1},
                                  "texts": {"train": 4, "restval": 1, "test": 2}}
    assert summary["protocol_drops"] == {"duplicate caption of the same image": 1}
    part, records = _texts(str(tmp_path / "out"), "coco_karpathy", "train")
    assert [r["text"].decode() for r in records] == ["a cat.", "a cat on a mat.", "two dogs.", "dogs playing."]
    for record in records:
        image = part.images[int(record["image_index"])]
        assert image["image_id"] == record["image_id"]
        imgid = [f for _, f, _, _ in fx.COCO_IMAGES].index(record["image_id"].decode())
        assert _colour(image["image"]) == _colour(fx.image_bytes(imgid))


def test_vqav2_vocabulary_and_soft_scores(tmp_path):
    fx.write_vqav2(str(tmp_path / "raw"))
    summary = _build(tmp_path, "vqav2", tmp_path / "raw", min_answer_count=1)
    assert summary["answer_vocabulary_size"] == 3
    data_dir = str(tmp_path / "out")
    assert sources.answer_vocabulary(data_dir) == ["black", "2", "yes"]
    part, records = _texts(data_dir, "vqav2", "train")
    by_id = {int(r["question_id"]): r for r in records}
    assert list(by_id[1000]["answer_labels"]) == [0] and list(by_id[1000]["answer_scores"]) == [1.0]
    # "two" and "2" normalise to the same answer (9 of 10); "black" was said once -> 0.3.
    assert list(by_id[1001]["answer_labels"]) == [1, 0]
    np.testing.assert_allclose(by_id[1001]["answer_scores"], [1.0, 0.3])
    assert by_id[2000]["text"] == b"Is it a dog?"
    assert len(by_id[2000]["answers"]) == 10
    assert part.images[int(by_id[2000]["image_index"])]["image_id"] == b"COCO_train2014_000000000002.jpg"
    assert summary["written"]["texts"] == {"train": 3, "val": 1}


def test_nlvr2_two_image_indices_per_sentence(tmp_path):
    fx.write_nlvr2(str(tmp_path / "raw"))
    summary = _build(tmp_path, "nlvr2", tmp_path / "raw")
    assert summary["written"] == {"images": {"train": 4, "dev": 2}, "texts": {"train": 3, "dev": 1}}
    part, records = _texts(str(tmp_path / "out"), "nlvr2", "train")
    assert [int(r["label"]) for r in records] == [1, 0, 0]
    for record in records:
        pair = record["identifier"].decode().rsplit("-", 1)[0]
        for side in (0, 1):
            assert part.images[int(record[f"image_index_{side}"])]["image_id"].decode() == f"{pair}-img{side}"


def test_snli_ve_hypothesis_is_the_text(tmp_path):
    fx.write_snli_ve(str(tmp_path / "raw"))
    summary = _build(tmp_path, "snli_ve", tmp_path / "raw")
    assert summary["written"]["texts"] == {"train": 3, "dev": 1}
    assert summary["written"]["images"] == {"train": 2, "dev": 1}
    part, records = _texts(str(tmp_path / "out"), "snli_ve", "train")
    assert [r["text"].decode() for r in records] == ["a person.", "a woman.", "a happy dog."]
    assert [int(r["label"]) for r in records] == [2, 0, 1]
    assert [part.images[int(r["image_index"])]["image_id"].decode() for r in records] == ["11.jpg", "11.jpg", "12.jpg"]


@pytest.mark.parametrize("dataset,writer,expected", [
    ("visual_genome", fx.write_visual_genome, {"images": {"train": 2}, "texts": {"train": 3}}),
    ("sbu", fx.write_sbu, {"images": {"train": 2}, "texts": {"train": 2}}),
    ("conceptual_captions", fx.write_conceptual_captions, {"images": {"train": 2}, "texts": {"train": 2}}),
])
def test_pretraining_caption_corpora(tmp_path, dataset, writer, expected):
    writer(str(tmp_path / "raw"))
    assert _build(tmp_path, dataset, tmp_path / "raw")["written"] == expected


def test_caption_arrow_files_give_the_same_records_as_karpathy_json(tmp_path):
    fx.write_coco_karpathy(str(tmp_path / "raw"))
    _build(tmp_path, "coco_karpathy", tmp_path / "raw")
    by_split = {}
    for imgid, (_, filename, split, captions) in enumerate(fx.COCO_IMAGES):
        by_split.setdefault(split, []).append((fx.image_bytes(imgid), captions, filename))
    for split, rows in by_split.items():
        fx.write_caption_arrow(str(tmp_path / "arrow" / f"coco_caption_karpathy_{split}.arrow"), rows, split)
    summary = build.build("coco_karpathy", str(tmp_path / "arrow"), str(tmp_path / "out_arrow"))
    assert summary["written"]["texts"] == {"train": 4, "restval": 1, "test": 2}
    for split in by_split:
        json_part, json_records = _texts(str(tmp_path / "out"), "coco_karpathy", split)
        arrow_part, arrow_records = _texts(str(tmp_path / "out_arrow"), "coco_karpathy", split)
        assert [(r["text"], r["image_id"]) for r in json_records] == [(r["text"], r["image_id"]) for r in arrow_records]
        assert [json_part.images[i]["image"] for i in range(len(json_part.images))] == \
               [arrow_part.images[i]["image"] for i in range(len(arrow_part.images))]


def test_vqav2_arrow_recovers_vocabulary_from_answer_labels(tmp_path):
    root = tmp_path / "arrow"
    fx.write_vqav2_arrow(str(root / "vqav2_train_fix.arrow"), [
        (fx.image_bytes(1), 1, ["what colour?", "how many?"], [1000, 1001],
         [["black", "white"], ["2"]], [[0, 2], [1]], [[1.0, 0.3], [0.9]])])
    fx.write_vqav2_arrow(str(root / "vqav2_val_fix.arrow"), [
        (fx.image_bytes(3), 3, ["is it?"], [3000], [["yes"]], [[3]], [[1.0]])])
    fx.write_vqav2_arrow(str(root / "vqav2_val.arrow"), [  # the un-fixed file is ignored
        (fx.image_bytes(3), 3, ["ignored"], [9], [["yes"]], [[3]], [[1.0]])])
    summary = build.build("vqav2", str(root), str(tmp_path / "out"))
    assert summary["written"]["texts"] == {"train": 2, "val": 1}
    assert sources.answer_vocabulary(str(tmp_path / "out")) == ["black", "2", "white", "yes"]
    _, records = _texts(str(tmp_path / "out"), "vqav2", "train")
    assert list(records[0]["answer_labels"]) == [0, 2]
    np.testing.assert_allclose(records[0]["answer_scores"], [1.0, 0.3])
    assert int(records[1]["question_id"]) == 1001


def test_nlvr2_and_snli_arrow_files(tmp_path):
    root = tmp_path / "arrow"
    png = [fx.image_bytes(i, "PNG") for i in range(4)]
    fx.write_nlvr2_arrow(str(root / "nlvr2_train.arrow"), [
        (png[0], png[1], ["a cat.", "two cats."], ["True", "False"], "train-1-0"),
        (png[2], png[3], ["a dog."], ["True"], "train-2-1")])
    fx.write_snli_arrow(str(root / "snli_train.arrow"), [
        (fx.image_bytes(7), [["a man.", "a person."], ["a man.", "a woman."]], [2, 0])])
    build.build("nlvr2", str(root), str(tmp_path / "out"))
    build.build("snli_ve", str(root), str(tmp_path / "out"))
    part, records = _texts(str(tmp_path / "out"), "nlvr2", "train")
    assert [(r["text"].decode(), int(r["label"])) for r in records] == [("a cat.", 1), ("two cats.", 0), ("a dog.", 1)]
    assert part.images[int(records[2]["image_index_1"])]["image"] == png[3]
    _, records = _texts(str(tmp_path / "out"), "snli_ve", "train")
    assert [(r["text"].decode(), int(r["label"])) for r in records] == [("a person.", 2), ("a woman.", 0)]


def test_cli_prints_summary(tmp_path, capsys):
    fx.write_snli_ve(str(tmp_path / "raw"))
    build.main(["snli_ve", "--manual_dir", str(tmp_path / "raw"), "--data_dir", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "texts: train 3, dev 1" in out and "skipped: none" in out
    assert os.path.isdir(tmp_path / "out" / "snli_ve" / "images" / "1.0.0")
