"""Each builder on a tiny fixture in its real raw format (and the .arrow path) writes the expected records."""
import io
import os
import types

import numpy as np
import pytest
from PIL import Image

import data_fixtures as fx
from bridgetower_jax.data import build, pipeline, sources
from bridgetower_jax.data.bad_records import BadRecordLog
from bridgetower_jax.data.raw import vgqa
from bridgetower_jax.data.tokenizer import load_tokenizer


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


# ---- VG-QA and the VQAv2 label space ---------------------------------------------------------------

VQAV2_VOCABULARY = ["black", "2", "yes"]   # fx.write_vqav2 with min_answer_count=1
# fx.VGQA_IMAGES with 2 held-out images each for val and test: COCO Karpathy val (12) and test (13)
# images, then from the end of the seed-0 shuffle of the others [18, 16, 15, 14, 19, 17, 20]: 20
# fills test, 17 fills val.
VGQA_VAL_IMAGES = {"12", "13", "20", "17"}
VGQA_TRAIN_IMAGES = {"10", "11", "14", "15", "16", "18", "19"}


def _build_vqav2_then(tmp_path, dataset, manual, **kw):
    """vqav2 first (its vocabulary labels VG-QA), then `dataset` into the same data_dir."""
    fx.write_vqav2(str(tmp_path / "coco"))
    _build(tmp_path, "vqav2", tmp_path / "coco", min_answer_count=1)
    return _build(tmp_path, dataset, manual, **kw)


def _by_question(data_dir, dataset, split):
    part, records = _texts(data_dir, dataset, split)
    return {int(r["question_id"]): r for r in records}, \
        {part.images[int(r["image_index"])]["image_id"].decode() for r in records}


def test_vgqa_labels_answers_in_the_vqav2_vocabulary(tmp_path):
    fx.write_vgqa(str(tmp_path / "vg"))
    summary = _build_vqav2_then(tmp_path, "vgqa", tmp_path / "vg", heldout_images=2,
                                skip_bad_records="answer_not_in_vocab")
    assert summary["written"] == {"images": {"train": 7, "val": 4}, "texts": {"train": 9, "val": 5}}
    assert summary["skipped"] == {"answer_not_in_vocab": 1}            # "umbrella" (qa 1005)
    assert summary["protocol_drops"] == {"repeats of a VG-QA question about the same image (merged)": 3,
                                         "VG-QA questions whose answers disagree": 1}   # qa 1006/1007
    data_dir = str(tmp_path / "out")
    assert sources.answer_vocabulary(data_dir, "vgqa") == VQAV2_VOCABULARY
    train, train_images = _by_question(data_dir, "vgqa", "train")
    val, val_images = _by_question(data_dir, "vgqa", "val")
    assert (train_images, val_images) == (VGQA_TRAIN_IMAGES, VGQA_VAL_IMAGES)
    assert sorted(train) == [1000, 1001, 1003, 1100, 1400, 1500, 1600, 1800, 1900]
    assert sorted(val) == [1200, 1201, 1300, 1700, 2000]
    # "two" and "2" agree after normalisation: one record under the first qa_id, score 1.0.
    assert (train[1001]["text"], list(train[1001]["answers"])) == (b"How many dogs?", [b"two", b"2"])
    assert list(train[1001]["answer_labels"]) == [1] and list(train[1001]["answer_scores"]) == [1.0]
    # Only in-vocabulary answers must agree (the original's rule): "white" is not in it.
    assert list(train[1003]["answer_labels"]) == [0]
    assert all(list(r["answer_labels"]) == [2] and list(r["answer_scores"]) == [1.0]
               for q, r in {**train, **val}.items() if q % 100 == 0)


def test_vgqa_split_is_deterministic_and_keeps_coco_val_test_out_of_train(tmp_path):
    root = fx.write_vgqa(str(tmp_path / "vg"))
    karpathy = os.path.join(root, "dataset_coco.json")
    splits = [vgqa.image_splits(root, BadRecordLog(), karpathy, coco_images_only=False, heldout_images=2)
              for _ in range(2)]
    assert splits[0] == splits[1]
    assert {str(i) for i, s in splits[0].items() if s == "val"} == VGQA_VAL_IMAGES
    # More held out: the COCO val/test images stay in val, the rest comes off the same shuffle.
    wider = vgqa.image_splits(root, BadRecordLog(), karpathy, coco_images_only=False, heldout_images=3)
    assert {i for i, s in wider.items() if s == "val"} == {12, 13, 20, 17, 19, 14}


def test_vgqa_coco_keeps_only_coco_karpathy_images(tmp_path):
    fx.write_vgqa(str(tmp_path / "vg"))
    summary = _build_vqav2_then(tmp_path, "vgqa_coco", tmp_path / "vg", skip_bad_records="answer_not_in_vocab")
    assert summary["written"] == {"images": {"train": 2, "val": 2}, "texts": {"train": 4, "val": 3}}
    assert summary["protocol_drops"]["VG images that are not COCO Karpathy images (coco_images_only)"] == 7
    train, train_images = _by_question(str(tmp_path / "out"), "vgqa_coco", "train")
    val, val_images = _by_question(str(tmp_path / "out"), "vgqa_coco", "val")
    assert (train_images, val_images) == ({"10", "11"}, {"12", "13"})    # Karpathy train+restval / val+test
    assert sorted(val) == [1200, 1201, 1300]


def test_vgqa_arrow_files_are_relabelled_in_the_vqav2_vocabulary(tmp_path):
    root = tmp_path / "arrow"
    # The original's files, labelled in its own answer order ["yes", "2", "black"].
    fx.write_vqav2_arrow(str(root / "vgqa_train.arrow"), [
        (fx.image_bytes(10), 10, ["Is it sunny?", "How many dogs?"], [1000, 1001], [["yes"], ["2"]],
         [[0], [1]], [[1.0], [1.0]])])
    fx.write_vqav2_arrow(str(root / "vgqa_val.arrow"), [
        (fx.image_bytes(12), 12, ["What color is the sky?"], [1201], [["black"]], [[2]], [[1.0]])])
    fx.write_vqav2_arrow(str(root / "vgqa_coco_train.arrow"), [
        (fx.image_bytes(11), 11, ["Is it sunny?"], [1100], [["yes"]], [[0]], [[1.0]])])
    summary = _build_vqav2_then(tmp_path, "vgqa", root)
    assert summary["written"]["texts"] == {"train": 2, "val": 1}
    train, _ = _by_question(str(tmp_path / "out"), "vgqa", "train")
    val, _ = _by_question(str(tmp_path / "out"), "vgqa", "val")
    assert [list(train[q]["answer_labels"]) for q in (1000, 1001)] == [[2], [1]]
    assert list(val[1201]["answer_labels"]) == [0] and list(val[1201]["answer_scores"]) == [1.0]
    summary = _build(tmp_path, "vgqa_coco", root)
    assert summary["written"]["texts"] == {"train": 1}


# The arrow rows write_vqa.py (answer-normalisation fix) makes of fx.write_vqav2's annotations,
# labelled in its own vocabulary ["2", "white", "black", "yes"]: distinct answers and their scores.
VQAV2_ARROW_TRAIN = [
    (fx.image_bytes(1), 1, ["What color is the cat?", "How many cats?"], [1000, 1001],
     [["black", "white"], ["2", "black"]], [[2, 1], [0, 2]], [[1.0, 0.6], [1.0, 0.3]]),
    (fx.image_bytes(2), 2, ["Is it a dog?"], [2000], [["yes"]], [[3]], [[1.0]])]
VQAV2_ARROW_VAL = [(fx.image_bytes(3), 3, ["What color is the bus?"], [3000], [["white", "black"]],
                    [[1, 2]], [[1.0, 1.0]])]


def write_vqav2_arrows(root) -> str:
    fx.write_vqav2_arrow(os.path.join(root, "vqav2_train_fix.arrow"), VQAV2_ARROW_TRAIN)
    fx.write_vqav2_arrow(os.path.join(root, "vqav2_val_fix.arrow"), VQAV2_ARROW_VAL)
    return str(root)


def test_vqav2_arrow_with_answer_vocab_gives_the_raw_json_targets(tmp_path):
    vocabulary = ["yes", "white", "black", "2"]
    vocab_file = fx.write_json(str(tmp_path / "vocab.json"), vocabulary)
    fx.write_vqav2(str(tmp_path / "raw"))
    for manual, out in ((str(tmp_path / "raw"), "out_raw"), (write_vqav2_arrows(tmp_path / "arrow"), "out_arrow")):
        build.main(["vqav2", "--manual_dir", manual, "--data_dir", str(tmp_path / out), "--answer_vocab", vocab_file])
    targets = {}
    for out in ("out_raw", "out_arrow"):
        assert sources.answer_vocabulary(str(tmp_path / out)) == vocabulary
        for split in ("train", "val"):
            for q, r in _by_question(str(tmp_path / out), "vqav2", split)[0].items():
                scores = [round(float(s), 4) for s in r["answer_scores"]]
                targets.setdefault(out, {})[q] = (list(r["answer_labels"]), scores)
    assert targets["out_arrow"] == targets["out_raw"] == {
        1000: ([2, 1], [1.0, 0.6]), 1001: ([3, 2], [1.0, 0.3]), 2000: ([0], [1.0]), 3000: ([1, 2], [1.0, 1.0])}


def test_vqa_training_concatenates_vqav2_and_vgqa(tmp_path):
    fx.write_vgqa(str(tmp_path / "vg"))
    _build_vqav2_then(tmp_path, "vgqa", tmp_path / "vg", heldout_images=2, skip_bad_records="answer_not_in_vocab")
    tokenizer = load_tokenizer(fx.tiny_tokenizer(str(tmp_path / "tok"), ["how many dogs is it sunny"] * 3))
    config = types.SimpleNamespace(image_size=16, max_text_len=8, read_threads=1,
                                   datasets=("vqav2:train", "vgqa:train"))
    it = pipeline.make_train_iterator("vqa", config, str(tmp_path / "out"), tokenizer, seed=0, process_index=0,
                                      process_count=1, batch_size=4)
    batches = [next(it) for _ in range(3)]    # one epoch: 3 vqav2 + 9 vgqa questions
    assert sorted(int(q) for b in batches for q in b["question_id"]) == \
        [1000, 1000, 1001, 1001, 1003, 1100, 1400, 1500, 1600, 1800, 1900, 2000]
    assert all(b["vqa_targets"].shape == (4, len(VQAV2_VOCABULARY)) for b in batches)
