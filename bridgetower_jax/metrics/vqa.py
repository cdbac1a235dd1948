"""VQAv2 metrics: the official answer normalisation, the official accuracy, the training-time
VQA score and the EvalAI submission file.

    normalize_answer(answer) -> str          the VQA evaluation toolkit's answer processing
    vqa_accuracy(predicted, gt_answers)      official accuracy of one prediction (leave-one-out)
    mean_vqa_accuracy(predictions, gt_answers_per_question, example_mask=None)
    vqa_score_per_example(logits, targets)   soft target of the argmax answer, [B]
    vqa_score(logits, targets, example_mask=None)   masked mean of the above (original `VQAScore`)
    answers_from_logits(logits, vocabulary)  argmax answer strings
    write_submission(path, question_ids, answers, example_mask=None)   EvalAI test-dev/test-std JSON

The normaliser follows the loop-based `processPunctuation` + `processDigitArticle` of the VQA
toolkit (GT-Vision-Lab/VQA), which is also what BridgeTower applies to the training answers
(its `normalize_word` adds a final comma removal that the punctuation step already implies).
The EvalAI server runs a later regex variant of the punctuation step; the two agree on ordinary
answers and differ only on unusual punctuation runs.
"""
from __future__ import annotations

import collections
import json
import re
from typing import Iterable, Sequence

import jax.numpy as jnp
import numpy as np

from bridgetower_jax import paths
from bridgetower_jax.metrics.classification import masked_mean

# ---- the toolkit's tables ------------------------------------------------------------------------

# Removed when it touches a space, or anywhere when the text holds a digit-comma-digit; otherwise
# replaced by a space (so "black-and-white" splits into words). The apostrophe is not listed:
# "man's" and "don't" survive. The period has its own rule below.
_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
                "@", "`", ",", "?", "!")
# A period not followed by a digit goes ("cat." -> "cat", "3.5" stays). The toolkit's pattern
# starts with the typo `(?!<=\d)` (a look-ahead for the text "<=digit", true almost always), kept
# here so that "x.<=5"-style oddities behave as the toolkit does.
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
# The toolkit passes `re.UNICODE` (== 32) positionally as `count`: at most 32 periods are removed.
_PERIOD_MAX_REMOVED = 32
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")

_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                 "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset({"a", "an", "the"})

# Annotators' apostrophe-less spellings mapped to the contracted form. Reproduced entry for entry,
# quirks included: lookups happen after lower-casing, so the capitalised keys ("Im", "Ive",
# "Id've", "I'dve") never match; "somebody'd" maps the wrong way round; a few keys map to
# themselves. Words that are also ordinary answers ("shed", "wed", "its", "ill", "well") are
# deliberately absent from the official table.
CONTRACTIONS: dict[str, str] = {
    # n't
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldnt": "couldn't",
    "couldnt've": "couldn't've", "couldn'tve": "couldn't've", "didnt": "didn't",
    "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't", "isnt": "isn't",
    "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mustnt": "mustn't", "neednt": "needn't", "oughtnt": "oughtn't", "shant": "shan't",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "wasnt": "wasn't", "werent": "weren't", "wont": "won't", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    # 've
    "couldve": "could've", "mightve": "might've", "mustve": "must've", "notve": "not've",
    "shouldve": "should've", "theyve": "they've", "weve": "we've", "whatve": "what've",
    "whereve": "where've", "whove": "who've", "wouldve": "would've", "youve": "you've",
    # 'd and 'd've
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "howd": "how'd",
    "Id've": "I'd've", "I'dve": "I'd've", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "shed've": "she'd've", "she'dve": "she'd've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "wed've": "we'd've", "we'dve": "we'd've", "whered": "where'd",
    "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've",
    # 'll
    "howll": "how'll", "itll": "it'll", "somebodyll": "somebody'll", "someonell": "someone'll",
    "somethingll": "something'll", "theyll": "they'll", "whatll": "what'll", "wholl": "who'll",
    "whyll": "why'll", "youll": "you'll",
    # 's, 're, 'm
    "hes": "he's", "hows": "how's", "let's": "let's", "she's": "she's", "somebodys": "somebody's",
    "someones": "someone's", "thats": "that's", "theres": "there's", "whats": "what's",
    "whens": "when's", "wheres": "where's", "whos": "who's", "whys": "why's",
    "therere": "there're", "theyre": "they're", "whatre": "what're", "whyre": "why're",
    "youre": "you're", "Im": "I'm", "Ive": "I've",
    # the rest
    "maam": "ma'am", "oclock": "o'clock", "twas": "'twas",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
}


# ---- normalisation ---------------------------------------------------------------------------------

def _process_punctuation(text: str) -> str:
    # The deletion test looks at the original text for every mark, so one "a, b" or "1,000"
    # anywhere decides how all later marks are treated: this is the toolkit's behaviour.
    number_with_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        touches_space = mark + " " in text or " " + mark in text
        out = out.replace(mark, "" if touches_space or number_with_comma else " ")
    return _PERIOD.sub("", out, count=_PERIOD_MAX_REMOVED)


def _process_digits_and_articles(text: str) -> str:
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def _clean_whitespace(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(answer: str) -> str:
    """The toolkit's processing of an answer: punctuation, then number words, articles, contractions."""
    return _process_digits_and_articles(_process_punctuation(_clean_whitespace(answer)))


# ---- official accuracy -----------------------------------------------------------------------------

def _leave_one_out_accuracy(predicted: str, gt_answers: Sequence[str]) -> float:
    # Each human is left out in turn; the prediction scores min(matches among the others / 3, 1).
    matches = sum(a == predicted for a in gt_answers)
    total = 0.0
    for answer in gt_answers:
        total += min(1.0, (matches - (answer == predicted)) / 3.0)
    return total / len(gt_answers)


def vqa_accuracy(predicted: str, gt_answers: Sequence[str], *, toolkit_gt_processing: bool = False) -> float:
    """Official VQA accuracy of one predicted answer against the human answers (usually 10).

    With 10 answers of which `c` match, this is 0, 0.3, 0.6, 0.9, 1.0 for c = 0, 1, 2, 3, >=4.
    The prediction is always normalised. By default every ground-truth answer is normalised the
    same way, so the accuracy equals the soft target BridgeTower trains on (`vqa_score` of a
    model that predicts this answer). `toolkit_gt_processing=True` reproduces the toolkit's
    treatment of the ground truth exactly: only the punctuation step, and only when the humans
    disagree. On VQAv2's annotations, which are already canonical, the two agree.
    """
    if not gt_answers:
        raise ValueError("vqa_accuracy needs at least one ground-truth answer")
    predicted = normalize_answer(predicted)
    gts = [_clean_whitespace(a) for a in gt_answers]
    if toolkit_gt_processing:
        if len(set(gts)) > 1:
            gts = [_process_punctuation(a) for a in gts]
    else:
        gts = [normalize_answer(a) for a in gts]
    return _leave_one_out_accuracy(predicted, gts)


def mean_vqa_accuracy(predictions: Sequence[str], gt_answers_per_question: Sequence[Sequence[str]],
                      example_mask: Sequence[float] | None = None, **kwargs) -> float:
    """Mean `vqa_accuracy` over questions, skipping those whose `example_mask` is 0 (padding)."""
    if len(predictions) != len(gt_answers_per_question):
        raise ValueError(f"{len(predictions)} predictions for {len(gt_answers_per_question)} questions")
    weights = np.ones(len(predictions)) if example_mask is None else np.asarray(example_mask, np.float64)
    total = sum(w * vqa_accuracy(p, g, **kwargs)
                for p, g, w in zip(predictions, gt_answers_per_question, weights) if w)
    return float(total / max(weights.sum(), 1.0))


# ---- training-style score ------------------------------------------------------------------------

def vqa_score_per_example(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
    """[B] soft target score of each question's argmax answer (jit-friendly)."""
    best = jnp.argmax(logits, axis=-1)
    return jnp.take_along_axis(targets, best[:, None], axis=-1)[:, 0].astype(jnp.float32)


def vqa_score(logits: jnp.ndarray, targets: jnp.ndarray,
              example_mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """The original `VQAScore` over one batch: mean argmax-answer soft score, padding excluded.

    To aggregate over an evaluation set, sum `vqa_score_per_example * example_mask` and the mask
    (`MeanAccumulator`, or `clu.metrics.Average.from_model_output(values, mask=example_mask)`) rather than
    averaging batch means, which would weight a half-padded last batch like a full one.
    """
    return masked_mean(vqa_score_per_example(logits, targets), example_mask)


def answers_from_logits(logits, vocabulary: Sequence[str]) -> list[str]:
    """Argmax answer strings of a [B, num_answers] logit array (host side)."""
    best = np.asarray(np.argmax(np.asarray(logits), axis=-1))
    if best.size and best.max() >= len(vocabulary):
        raise ValueError(f"logits have {np.asarray(logits).shape[-1]} answers, vocabulary {len(vocabulary)}")
    return [vocabulary[i] for i in best]


# ---- submission ------------------------------------------------------------------------------------

def _submission_rows(question_ids: Iterable, answers: Iterable[str], example_mask) -> list[dict]:
    question_ids, answers = list(question_ids), list(answers)
    if len(question_ids) != len(answers):
        raise ValueError(f"{len(question_ids)} question ids for {len(answers)} answers")
    keep = [True] * len(answers) if example_mask is None else [bool(m) for m in example_mask]
    rows, seen = [], collections.Counter()
    for qid, answer, kept in zip(question_ids, answers, keep):
        if kept:
            rows.append({"question_id": int(qid), "answer": str(answer)})
            seen[int(qid)] += 1
    repeated = [qid for qid, n in seen.items() if n > 1]
    if repeated:
        # EvalAI rejects repeats; they mean padding rows were not masked out.
        raise ValueError(f"{len(repeated)} question ids appear more than once, e.g. {repeated[:5]}")
    return rows


def write_submission(path: str, question_ids: Iterable, answers: Iterable[str], example_mask=None) -> int:
    """Write `[{"question_id": int, "answer": str}, ...]` for EvalAI; returns the number of rows.

    Rows whose `example_mask` is 0 are dropped; repeated question ids raise. The file appears
    whole or not at all (`paths.write_text`; `path` may be a gs:// URL), so a preempted job never
    leaves a truncated submission behind.
    """
    rows = _submission_rows(question_ids, answers, example_mask)
    paths.write_text(path, json.dumps(rows))
    return len(rows)
