"""Tokenizer, VQA answer normalisation and the demo corpus."""
import hashlib
import json
import os
import time

import numpy as np
import pytest

from bridgetower_jax.data import demo, demo_scenes, tokenizer, vqa_answers


def test_trained_tokenizer_has_roberta_special_layout(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a red circle on the left.\nthree blue squares.\n")
    tokenizer.main(["--corpus", str(corpus), "--out", str(tmp_path / "tok"), "--vocab_size", "300"])
    tok = tokenizer.load_tokenizer(str(tmp_path / "tok"))
    assert [tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.mask_token_id] == [0, 1, 2, 3, 4]
    encoded = tok("a red circle", padding="max_length", max_length=12, truncation=True)
    assert encoded["input_ids"][0] == 0 and 2 in encoded["input_ids"] and encoded["input_ids"][-1] == 1
    assert tok.decode(encoded["input_ids"], skip_special_tokens=True) == "a red circle"


def test_tokenizer_never_takes_a_hub_id():
    with pytest.raises(FileNotFoundError, match="hub ids are not accepted"):
        tokenizer.load_tokenizer("roberta-base")


@pytest.mark.parametrize("raw,normalised", [
    ("Two", "2"), ("the dog.", "dog"), ("dont", "don't"), ("1,000", "1000"), ("yes!", "yes"),
    ("a man's hat", "man's hat"), ("3.5", "3.5"), ("t-shirt", "t shirt"), ("none", "0"),
])
def test_answer_normalisation(raw, normalised):
    assert vqa_answers.normalize_answer(raw) == normalised


def test_soft_scores_follow_the_leave_one_out_accuracy():
    for count in range(11):
        # official accuracy: mean over the 10 leave-one-out subsets of min(1, matches / 3)
        official = np.mean([min(1.0, (count - (i < count)) / 3) for i in range(10)])
        assert vqa_answers.score_for_count(count) == pytest.approx(official, abs=0.005)


def _tree_digest(root):
    digest = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            digest.update(name.encode())
            digest.update(open(os.path.join(folder, name), "rb").read())
    return digest.hexdigest()


def test_demo_is_deterministic_and_fast(tmp_path):
    sizes = dict(coco_images=150, flickr_images=60, nlvr2_pairs=40)
    start = time.perf_counter()
    demo.write_demo(str(tmp_path / "a"), seed=1, **sizes)
    assert time.perf_counter() - start < 10
    demo.write_demo(str(tmp_path / "b"), seed=1, **sizes)
    demo.write_demo(str(tmp_path / "c"), seed=2, **sizes)
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    assert _tree_digest(tmp_path / "a") != _tree_digest(tmp_path / "c")
    karpathy = json.load(open(tmp_path / "a" / "coco" / "dataset_coco.json"))
    assert {e["split"] for e in karpathy["images"]} == {"train", "restval", "val", "test"}
    assert all(len(e["sentences"]) == 5 for e in karpathy["images"])


def test_demo_texts_follow_from_the_scene():
    for seed in range(200):
        rng = np.random.default_rng(seed)
        scene = demo_scenes.random_scene(rng)
        for question, answer, _ in demo_scenes.vqa_questions(scene, rng):
            words = question.rstrip("?").split()
            if question.startswith("how many") and words[2] in demo_scenes.COLOURS:
                assert int(answer) == scene.count(colour=words[2])
            elif question.startswith("how many"):
                assert int(answer) == scene.count(shape=words[2][:-1])
            elif question.startswith("is there"):
                assert answer == ("yes" if scene.has(words[-1], words[-2]) else "no")
            elif question.startswith("what colour"):
                assert answer == next(o.colour for o in scene.objects if o.shape == words[-1])
            else:
                place = " ".join(words[-2:])
                assert answer in {o.shape for o in scene.objects if o.place == place}
        other = demo_scenes.random_scene(rng)
        sentence, label = demo_scenes.nlvr2_statement(scene, other, rng)
        if sentence.startswith("both images contain"):
            shape = sentence.split()[-1].rstrip(".")
            assert label == (scene.has(shape) and other.has(shape))
