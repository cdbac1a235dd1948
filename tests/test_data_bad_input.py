"""Bad input gives a clear error naming the file and the record, or a counted, logged skip."""
import os

import numpy as np
import pytest

import data_fixtures as fx
from bridgetower_jax.data import build, task_examples
from bridgetower_jax.data.bad_records import BadRecordError
from bridgetower_jax.data.sources import SplitSource
from bridgetower_jax.data.tokenizer import load_tokenizer
from bridgetower_jax.data.transforms import ImageTransform

FIRST_IMAGE = os.path.join("train2014", "COCO_train2014_000000000001.jpg")


def _coco(tmp_path, images=fx.COCO_IMAGES):
    return fx.write_coco_karpathy(str(tmp_path / "raw"), images)


def _build(tmp_path, dataset="coco_karpathy", **kw):
    return build.build(dataset, str(tmp_path / "raw"), str(tmp_path / "out"), **kw)


def test_truncated_jpeg(tmp_path):
    root = _coco(tmp_path)
    path = os.path.join(root, FIRST_IMAGE)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(BadRecordError, match=r"bad_image: truncated JPEG.*COCO_train2014_000000000001\.jpg"):
        _build(tmp_path)
    summary = _build(tmp_path, skip_bad_records="bad_image")
    # The image and both of its captions are dropped, and counted.
    assert summary["skipped"] == {"bad_image": 1, "image_skipped": 2}
    assert summary["written"]["images"]["train"] == 1 and summary["written"]["texts"]["train"] == 2


def test_missing_image_file(tmp_path):
    root = _coco(tmp_path)
    os.remove(os.path.join(root, FIRST_IMAGE))
    with pytest.raises(BadRecordError, match=r"missing_image: image file not found \[file .*COCO_train2014_000000000001\.jpg"):
        _build(tmp_path)
    summary = _build(tmp_path, skip_bad_records="all")
    assert summary["skipped"] == {"missing_image": 1, "image_skipped": 2}


def test_empty_caption(tmp_path):
    images = [fx.COCO_IMAGES[0], ("train2014", "COCO_train2014_000000000009.jpg", "train", ["ok.", "  "])]
    _coco(tmp_path, images)
    with pytest.raises(BadRecordError, match=r"empty_text: empty caption \[file .*dataset_coco\.json, record images\[1\]"):
        _build(tmp_path)
    summary = _build(tmp_path, skip_bad_records="empty_text")
    assert summary["skipped"] == {"empty_text": 1}
    assert summary["written"]["texts"]["train"] == 3


def test_answer_outside_vocabulary(tmp_path):
    fx.write_vqav2(str(tmp_path / "raw"))
    # With min count 2 only "black" is in the vocabulary; question 2000 ("yes" x10) has no target.
    with pytest.raises(BadRecordError, match=r"answer_not_in_vocab: .*\['yes'\].*v2_mscoco_train2014_annotations\.json, record question_id=2000"):
        _build(tmp_path, "vqav2", min_answer_count=2)
    summary = _build(tmp_path, "vqav2", min_answer_count=2, skip_bad_records="answer_not_in_vocab")
    assert summary["skipped"] == {"answer_not_in_vocab": 1}
    assert summary["written"]["texts"] == {"train": 2, "val": 1}


def test_malformed_json_file(tmp_path):
    root = _coco(tmp_path)
    path = os.path.join(root, "dataset_coco.json")
    open(path, "w").write(open(path).read()[:-20])
    with pytest.raises(BadRecordError, match=r"malformed JSON in .*dataset_coco\.json at line 1 column \d+"):
        _build(tmp_path, skip_bad_records="all")  # a broken whole file is never skippable


def test_malformed_json_line(tmp_path):
    root = fx.write_nlvr2(str(tmp_path / "raw"))
    path = os.path.join(root, "data", "train.json")
    lines = open(path).read().splitlines()
    lines[1] = lines[1][:15]
    open(path, "w").write("\n".join(lines) + "\n")
    with pytest.raises(BadRecordError, match=r"malformed_json: .*train\.json, record line 2"):
        _build(tmp_path, "nlvr2")
    summary = _build(tmp_path, "nlvr2", skip_bad_records="malformed_json")
    assert summary["skipped"] == {"malformed_json": 1}
    assert summary["written"]["texts"]["train"] == 2


def test_cli_reports_error_and_exit(tmp_path):
    root = _coco(tmp_path)
    os.remove(os.path.join(root, FIRST_IMAGE))
    with pytest.raises(SystemExit, match="missing_image"):
        build.main(["coco_karpathy", "--manual_dir", root, "--data_dir", str(tmp_path / "out")])


def test_undecodable_image_at_training_time_is_named_or_substituted(tmp_path):
    tokenizer = fx.tiny_tokenizer(str(tmp_path / "tok"), ["a cat on a mat"] * 3)
    images = [{"image": b"\xff\xd8 not really a jpeg \xff\xd9", "image_id": b"broken.jpg"},
              {"image": fx.image_bytes(1), "image_id": b"fine.jpg"}]
    part = SplitSource("toy", "train", texts=[{"text": b"a cat", "image_index": 0}], images=images)
    kwargs = dict(parts=[part], tokenizer=load_tokenizer(tokenizer), max_text_len=8,
                  image_transform=ImageTransform("clip", 16))
    element = (0, (0, 0, 1))
    with pytest.raises(BadRecordError, match=r"cannot decode image broken\.jpg \(image 0 of toy:train\)"):
        task_examples.RetrievalPairExample(**kwargs, image_offsets=[0]).random_map(element, np.random.default_rng(0))
    example = task_examples.RetrievalPairExample(**kwargs, image_offsets=[0], skip_bad_records=True)
    out = example.random_map(element, np.random.default_rng(0))
    assert out["pixel_values"].shape == (16, 16, 3)
