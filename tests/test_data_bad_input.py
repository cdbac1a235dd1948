"""Bad input gives a clear error naming the file and the record, or a counted, logged skip."""
import json
import os
import re
import types

import numpy as np
import pytest

import data_fixtures as fx
from bridgetower_jax.data import build, pipeline, task_examples
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


# ---- VG-QA and VQA answer vocabularies -------------------------------------------------------------

def _vgqa(tmp_path, **kw):
    """vqav2 (vocabulary black, 2, yes) built into out/, then VG-QA from raw/ with 2 held-out images."""
    fx.write_vqav2(str(tmp_path / "coco"))
    build.build("vqav2", str(tmp_path / "coco"), str(tmp_path / "out"), min_answer_count=1)
    return _build(tmp_path, "vgqa", **{"heldout_images": 2, **kw})


def test_vgqa_question_without_answer_in_the_vqav2_vocabulary(tmp_path):
    fx.write_vgqa(str(tmp_path / "raw"))
    with pytest.raises(BadRecordError, match=r"answer_not_in_vocab: none of the answers \['umbrella'\] is in the "
                                             r"3-answer VQAv2 vocabulary \[file .*question_answers\.json, record qa_id=1005\]"):
        _vgqa(tmp_path)


def test_vgqa_malformed_json(tmp_path):
    root = fx.write_vgqa(str(tmp_path / "raw"))
    path = os.path.join(root, "annotations", "question_answers.json")
    open(path, "w").write(open(path).read()[:-30])
    with pytest.raises(BadRecordError, match=r"malformed JSON in .*annotations/question_answers\.json at line 1"):
        _vgqa(tmp_path, skip_bad_records="all")


def test_vgqa_missing_image_and_missing_metadata(tmp_path):
    images = [i for i in fx.VGQA_IMAGES if i[0] != 19]
    root = fx.write_vgqa(str(tmp_path / "raw"), images)
    os.remove(os.path.join(root, "images", "VG_100K", "14.jpg"))
    # Image 15 has questions but no image_data.json entry, so it has no split.
    data = json.load(open(os.path.join(root, "image_data.json")))
    fx.write_json(os.path.join(root, "image_data.json"), [d for d in data if d["image_id"] != 15] +
                  [{"image_id": 19, "url": "u", "width": 1, "height": 1, "coco_id": None}])
    with pytest.raises(BadRecordError, match=r"missing_field: the image has no entry in image_data\.json.*"
                                             r"question_answers\.json, record \[5\] \(image id 15\)"):
        _vgqa(tmp_path, skip_bad_records="answer_not_in_vocab")
    with pytest.raises(BadRecordError, match=r"missing_image: image file not found \[file .*VG_100K/14\.jpg, record image 14\]"):
        _build(tmp_path, "vgqa", heldout_images=2, skip_bad_records="answer_not_in_vocab,missing_field")
    summary = _build(tmp_path, "vgqa", heldout_images=2, skip_bad_records="all")
    assert summary["skipped"] == {"answer_not_in_vocab": 1, "missing_field": 1, "missing_image": 1,
                                  "image_skipped": 1}


def test_vgqa_needs_a_vqav2_vocabulary(tmp_path):
    root = fx.write_vgqa(str(tmp_path / "raw"))
    with pytest.raises(SystemExit, match=r"error: vgqa labels its answers in the VQAv2 answer vocabulary, and .*out "
                                         r"has no built vqav2: build vqav2 into the same --data_dir first, or pass "
                                         r"--answer_vocab FILE"):
        build.main(["vgqa", "--manual_dir", root, "--data_dir", str(tmp_path / "out")])


def test_vgqa_too_few_images_to_hold_out(tmp_path):
    fx.write_vgqa(str(tmp_path / "raw"))
    with pytest.raises(ValueError, match=r"image_data\.json: 4 more VG images are needed for the held-out val images "
                                         r"but only 3 are left; lower heldout_images"):
        _vgqa(tmp_path, heldout_images=5)   # 7 images outside Karpathy: test takes 4, val needs 4 more


def test_vqav2_arrow_answer_vocab_reports_questions_without_answer_like_raw_json(tmp_path):
    vocab_file = fx.write_json(str(tmp_path / "vocab.json"), ["black", "2"])   # no "yes": question 2000
    fx.write_vqav2(str(tmp_path / "raw"))
    arrow = str(tmp_path / "arrow")
    fx.write_vqav2_arrow(os.path.join(arrow, "vqav2_train_fix.arrow"), [
        (fx.image_bytes(1), 1, ["How many cats?"], [1001], [["2", "black"]], [[0, 2]], [[1.0, 0.3]]),
        (fx.image_bytes(2), 2, ["Is it a dog?"], [2000], [["yes"]], [[3]], [[1.0]])])
    with pytest.raises(BadRecordError, match=r"answer_not_in_vocab: none of the answers \['yes'\] is in the 2-answer "
                                             r"vocabulary \[file .*vqav2_train_fix\.arrow, record row 1 question_id=2000\]"):
        build.build("vqav2", arrow, str(tmp_path / "out"), answer_vocabulary=["black", "2"])
    skipped = {}
    for manual in (str(tmp_path / "raw"), arrow):
        out = os.path.join(manual, "out")
        build.main(["vqav2", "--manual_dir", manual, "--data_dir", out, "--answer_vocab", vocab_file,
                    "--skip_bad_records=answer_not_in_vocab", "--summary_json", out + ".json"])
        skipped[manual] = json.load(open(out + ".json"))["skipped"]
    assert skipped == {str(tmp_path / "raw"): {"answer_not_in_vocab": 1}, arrow: {"answer_not_in_vocab": 1}}


def test_vqa_arrow_score_that_is_no_soft_score(tmp_path):
    arrow = str(tmp_path / "arrow")
    fx.write_vqav2_arrow(os.path.join(arrow, "vqav2_train_fix.arrow"), [
        (fx.image_bytes(1), 1, ["How many cats?"], [1001], [["2"]], [[0]], [[0.5]])])
    with pytest.raises(BadRecordError, match=r"bad_label: answer score 0\.5 is not one of the soft scores .*"
                                             r"vqav2_train_fix\.arrow, record row 0 question_id=1001"):
        build.build("vqav2", arrow, str(tmp_path / "out"), answer_vocabulary=["2"])


@pytest.mark.parametrize("argv,message", [
    (["nlvr2", "--answer_vocab", "v.json"], r"--answer_vocab means nothing for nlvr2 from raw files; it is for "
                                            r"vqav2, vgqa, vgqa_coco"),
    (["vqav2", "--source", "arrow", "--min_answer_count", "2"],
     r"--min_answer_count means nothing for vqav2 from arrow files; it is for vqav2 from raw files"),
    (["vgqa_coco", "--vgqa_heldout_images", "9"], r"--vgqa_heldout_images means nothing for vgqa_coco"),
    (["vqav2", "--karpathy_json", "k.json"], r"--karpathy_json means nothing for vqav2 from raw files"),
    (["vqav2", "--answer_vocab", "VOCAB", "--min_answer_count", "2"],
     r"--min_answer_count builds an answer vocabulary; it means nothing with --answer_vocab"),
    (["vgqa", "--answer_vocab", "BROKEN"], r"malformed JSON in .*broken\.json"),
])
def test_cli_refuses_flags_that_mean_nothing(tmp_path, capsys, argv, message):
    vocab = fx.write_json(str(tmp_path / "vocab.json"), ["yes"])
    broken = fx.write_file(str(tmp_path / "broken.json"), '["yes",')
    argv = [{"VOCAB": vocab, "BROKEN": broken}.get(a, a) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        build.main([*argv, "--manual_dir", str(tmp_path), "--data_dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not os.path.exists(tmp_path / "out")


def test_vqa_training_refuses_datasets_with_different_answer_vocabularies(tmp_path):
    fx.write_vgqa(str(tmp_path / "raw"))
    fx.write_vqav2(str(tmp_path / "coco"))
    build.build("vqav2", str(tmp_path / "coco"), str(tmp_path / "out"), min_answer_count=1)
    _build(tmp_path, "vgqa_coco", answer_vocabulary=["yes", "black", "2"], skip_bad_records="answer_not_in_vocab")
    config = types.SimpleNamespace(image_size=16, max_text_len=8, datasets=("vqav2:train", "vgqa_coco:train"))
    tokenizer = load_tokenizer(fx.tiny_tokenizer(str(tmp_path / "tok"), ["is it sunny"] * 3))
    with pytest.raises(ValueError, match=r"vqav2 and vgqa_coco have different answer vocabularies; rebuild "
                                         r"vgqa_coco with vqav2's \(remove .*out/vgqa_coco;"):
        pipeline.make_train_iterator("vqa", config, str(tmp_path / "out"), tokenizer, seed=0, process_index=0,
                                     process_count=1, batch_size=2)
