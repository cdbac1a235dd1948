"""VQAv2 answer normalisation, the answer vocabulary and soft scores, as the original builds them.

`normalize_answer` follows the official evaluation's punctuation and digit/article processing plus
BridgeTower's final comma removal. The vocabulary is every normalised `multiple_choice_answer` of
train+val seen at least `min_count` (9) times, in first-seen order (3129 answers on VQAv2). A
question's target gives each in-vocabulary answer the score of how many of the 10 humans gave it.
"""
from __future__ import annotations

import collections
import re
from typing import Iterable, Sequence

import numpy as np

_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
                "@", "`", ",", "?", "!")
_PERIOD_NOT_IN_NUMBER = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_IN_NUMBER = re.compile(r"(\d)(,)(\d)")
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                 "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
# Apostrophe-less spellings the annotators typed, mapped back (the official table's common part).
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "shant": "shan't", "shed": "she'd",
    "shes": "she's", "shouldve": "should've", "shouldnt": "shouldn't", "somebodyd": "somebody'd",
    "somebodys": "somebody's", "someoned": "someone'd", "someones": "someone's",
    "somethingd": "something'd", "somethings": "something's", "thered": "there'd",
    "theres": "there's", "theyd": "they'd", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed": "we'd", "weve": "we've",
    "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've",
    "wouldnt": "wouldn't", "yall": "y'all", "youd": "you'd", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}


def _strip_punctuation(text: str) -> str:
    # Punctuation touching a space (or a comma inside a number) is deleted, else it splits words.
    delete = _COMMA_IN_NUMBER.search(text) is not None
    out = text
    for p in _PUNCTUATION:
        out = out.replace(p, "" if delete or (p + " " in text or " " + p in text) else " ")
    # The official code passes re.UNICODE (32) as `count`, so at most 32 periods go.
    return _PERIOD_NOT_IN_NUMBER.sub("", out, 32)


def _digits_and_articles(text: str) -> str:
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def normalize_answer(answer: str) -> str:
    return _digits_and_articles(_strip_punctuation(answer)).replace(",", "")


def score_for_count(count: int) -> float:
    """Soft score of an answer given by `count` of 10 humans (= the official leave-one-out accuracy)."""
    return (0.0, 0.3, 0.6, 0.9)[count] if count < 4 else 1.0


def soft_targets(answers: Iterable[str], answer_to_label: dict[str, int]) -> tuple[list[int], list[float]]:
    counts = collections.Counter(normalize_answer(a) for a in answers)
    labels = [answer_to_label[a] for a in counts if a in answer_to_label]
    scores = [score_for_count(counts[a]) for a in counts if a in answer_to_label]
    return labels, scores


def build_answer_vocabulary(multiple_choice_answers: Iterable[str], min_count: int = 9) -> list[str]:
    counts = collections.Counter(normalize_answer(a) for a in multiple_choice_answers)
    return [a for a, c in counts.items() if c >= min_count]


def dense_targets(labels: Sequence[int], scores: Sequence[float], num_answers: int):
    target = np.zeros((num_answers,), np.float32)
    target[np.asarray(labels, np.int64)] = np.asarray(scores, np.float32)
    return target
