"""VQAv2 answer normalisation, the answer vocabulary and soft scores, as the original builds them.

`normalize_answer` is the official evaluation's punctuation and digit/article processing, shared
with the evaluation metrics so training targets and scores agree. The vocabulary is every normalised `multiple_choice_answer` of
train+val seen at least `min_count` (9) times, in first-seen order (3129 answers on VQAv2). A
question's target gives each in-vocabulary answer the score of how many of the 10 humans gave it.
"""
from __future__ import annotations

import collections
from typing import Iterable, Sequence

import numpy as np

from bridgetower_jax.metrics.vqa import normalize_answer  # noqa: F401  (re-exported: one normaliser)

def score_for_count(count: int) -> float:
    """Soft score of an answer given by `count` of 10 humans (= the official leave-one-out accuracy)."""
    return (0.0, 0.3, 0.6, 0.9)[count] if count < 4 else 1.0


def soft_targets(answers: Iterable[str], answer_to_label: dict[str, int]) -> tuple[list[int], list[float]]:
    counts = collections.Counter(normalize_answer(a) for a in answers)
    labels = [answer_to_label[a] for a in counts if a in answer_to_label]
    scores = [score_for_count(counts[a]) for a in counts if a in answer_to_label]
    return labels, scores


def count_for_score(score: float) -> int:
    """How many humans gave an answer of this soft score (4 stands for "4 or more": the same score)."""
    for count in range(1, 5):
        if abs(score - score_for_count(count)) < 1e-6:
            return count
    raise ValueError(f"answer score {score} is not one of the soft scores 0.3, 0.6, 0.9, 1.0")


def soft_targets_from_scores(answers: Sequence[str], scores: Sequence[float],
                             answer_to_label: dict[str, int]) -> tuple[list[int], list[float]]:
    """Soft targets over another vocabulary from (answer, score) pairs, which is all the .arrow files
    keep of the 10 human answers: each score says how many humans gave its answer, so this is
    `soft_targets` of that many copies of each answer (same normalisation, same scores)."""
    if len(answers) != len(scores):
        raise ValueError(f"{len(answers)} answers but {len(scores)} answer scores")
    return soft_targets([a for a, s in zip(answers, scores) for _ in range(count_for_score(s))], answer_to_label)


def build_answer_vocabulary(multiple_choice_answers: Iterable[str], min_count: int = 9) -> list[str]:
    counts = collections.Counter(normalize_answer(a) for a in multiple_choice_answers)
    return [a for a, c in counts.items() if c >= min_count]


def dense_targets(labels: Sequence[int], scores: Sequence[float], num_answers: int):
    target = np.zeros((num_answers,), np.float32)
    target[np.asarray(labels, np.int64)] = np.asarray(scores, np.float32)
    return target
