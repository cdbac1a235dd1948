"""VQA metrics: the official normaliser, leave-one-out accuracy, training score, submission file."""
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from bridgetower_jax.data.vqa_answers import score_for_count
from bridgetower_jax.metrics import vqa


@pytest.mark.parametrize("raw, expected", [
    ("Two", "2"),                         # number words -> digits, after lower-casing
    ("none", "0"),
    ("dont", "don't"),                    # contraction table
    ("whats up?", "what's up"),
    ("couldnt've", "couldn't've"),
    ("Im", "im"),                         # capitalised table keys never match after lower-casing
    ("shed", "shed"),                     # an ordinary word, not in the official table
    ("the cat.", "cat"),                  # trailing period and article go
    ("An apple", "apple"),
    ("a man's", "man's"),                 # the apostrophe is not punctuation here
    ("It's a dog", "it's dog"),
    ("10,000", "10000"),                  # digit-comma-digit: the comma is deleted, the number stays one word
    ("$1,000.00", "$1000.00"),            # ... and a period before a digit stays
    ("3.5", "3.5"),
    ("5.", "5"),
    ("yes!", "yes"),
    ("black-and-white", "black and white"),  # a mark not touching a space becomes a space
    ("left/right", "left right"),
    ("hot dog, pizza", "hot dog pizza"),     # a mark touching a space is deleted
    ("one, two", "1 2"),
    (" \tyes\n", "yes"),
])
def test_normalize_answer_official_examples(raw, expected):
    assert vqa.normalize_answer(raw) == expected


def test_normalize_answer_removes_at_most_32_periods():
    # The toolkit passes re.UNICODE (32) as the `count` of its period substitution.
    assert vqa.normalize_answer("x." * 40) == "x" * 33 + ".x" * 7 + "."


def test_contraction_table_is_the_full_official_one():
    assert len(vqa.CONTRACTIONS) == 120
    assert vqa.CONTRACTIONS["somebody'd"] == "somebodyd"  # the toolkit's backwards entry, kept
    assert not {"shed", "wed", "its", "ill", "well"} & set(vqa.CONTRACTIONS)


@pytest.mark.parametrize("matches, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_accuracy_leave_one_out_on_ten_answers(matches, expected):
    # c matching of 10: (c * min(1, (c-1)/3) + (10-c) * min(1, c/3)) / 10.
    gts = ["cat"] * matches + ["dog"] * (10 - matches)
    assert vqa.vqa_accuracy("cat", gts) == pytest.approx(expected)
    assert vqa.vqa_accuracy("cat", gts) == pytest.approx(score_for_count(matches))  # the training target


def test_vqa_accuracy_three_answers_by_hand():
    # Leave out cat: 1 cat left -> 1/3; the other cat: 1/3; dog: 2 cats -> 2/3. Mean 4/9.
    assert vqa.vqa_accuracy("cat", ["cat", "cat", "dog"]) == pytest.approx(4 / 9)


def test_vqa_accuracy_normalises_prediction_and_answers():
    assert vqa.vqa_accuracy("Two.", ["two"] * 3 + ["2"] * 2 + ["3"] * 5) == pytest.approx(1.0)
    assert vqa.vqa_accuracy("the dog", ["dog"] * 2 + ["cat"] * 8) == pytest.approx(0.6)


def test_vqa_accuracy_toolkit_ground_truth_processing():
    # The toolkit leaves unanimous answers untouched and only strips punctuation otherwise.
    assert vqa.vqa_accuracy("2", ["Two"] * 10, toolkit_gt_processing=True) == 0.0
    assert vqa.vqa_accuracy("2", ["Two"] * 10) == 1.0
    assert vqa.vqa_accuracy("yes", ["yes."] * 4 + ["no"] * 6, toolkit_gt_processing=True) == 1.0
    # Punctuation alone turns "yes!" into "yes " (a space, no re-join), which matches nothing.
    assert vqa.vqa_accuracy("yes", ["yes!"] * 4 + ["no"] * 6, toolkit_gt_processing=True) == 0.0
    assert vqa.vqa_accuracy("yes", ["yes!"] * 4 + ["no"] * 6) == 1.0
    assert vqa.vqa_accuracy("two", ["two"] * 4 + ["no"] * 6, toolkit_gt_processing=True) == 0.0


def test_mean_vqa_accuracy_skips_padding():
    gts = [["cat"] * 10, ["dog"] * 1 + ["x"] * 9, ["cat"] * 10]
    assert vqa.mean_vqa_accuracy(["cat", "dog", "dog"], gts, example_mask=[1, 1, 0]) == pytest.approx(0.65)
    assert vqa.mean_vqa_accuracy(["cat", "dog", "dog"], gts) == pytest.approx(1.3 / 3)


def test_vqa_score_takes_the_argmax_answers_soft_target():
    logits = jnp.array([[0.1, 2.0, 0.3], [5.0, 0.0, 1.0], [0.0, 0.0, 9.0], [9.0, 0.0, 0.0]])
    targets = jnp.array([[0.0, 0.6, 1.0], [0.3, 0.0, 0.0], [1.0, 0.0, 0.9], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(vqa.vqa_score_per_example(logits, targets), [0.6, 0.3, 0.9, 1.0])
    assert float(vqa.vqa_score(logits, targets)) == pytest.approx(2.8 / 4)
    # The last row is padding: (0.6 + 0.3 + 0.9) / 3.
    assert float(vqa.vqa_score(logits, targets, jnp.array([1, 1, 1, 0]))) == pytest.approx(0.6)


def test_answers_from_logits():
    assert vqa.answers_from_logits(np.array([[0.0, 1.0], [3.0, 1.0]]), ["no", "yes"]) == ["yes", "no"]


def test_write_submission_drops_padding_and_writes_ints(tmp_path):
    path = tmp_path / "sub" / "vqa_submit.json"
    ids = np.array([262148000, 262148001, 262148000], np.int64)  # the last row is a padding repeat
    n = vqa.write_submission(str(path), ids, ["yes", "2", "yes"], example_mask=np.array([1, 1, 0]))
    assert n == 2
    assert json.loads(path.read_text()) == [{"question_id": 262148000, "answer": "yes"},
                                            {"question_id": 262148001, "answer": "2"}]
    assert os.listdir(path.parent) == ["vqa_submit.json"]  # no temporary file left behind


def test_write_submission_rejects_repeated_questions(tmp_path):
    with pytest.raises(ValueError, match="more than once"):
        vqa.write_submission(str(tmp_path / "s.json"), [1, 1], ["a", "b"])


def test_write_submission_failure_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "s.json"
    vqa.write_submission(str(path), [1], ["old"])

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        vqa.write_submission(str(path), [1], ["new"])
    assert json.loads(path.read_text()) == [{"question_id": 1, "answer": "old"}]
    assert os.listdir(tmp_path) == ["s.json"]
