"""Evaluation metrics: VQA (official normalisation and accuracy, training score, EvalAI file),
classification accuracy with padding masks, and retrieval Recall@K with the ITC + ITM re-rank.

Everything that takes a batch takes its `example_mask` (0 = padding example, excluded).
"""
from bridgetower_jax.metrics.classification import MeanAccumulator, accuracy, correct_predictions, masked_mean
from bridgetower_jax.metrics.retrieval import (itc_then_itm_scores, recall_at_k, rows_by_index, score_pairs,
                                               similarity_matrix)
from bridgetower_jax.metrics.vqa import (answers_from_logits, mean_vqa_accuracy, normalize_answer,
                                         vqa_accuracy, vqa_score, vqa_score_per_example, write_submission)

__all__ = [
    "MeanAccumulator", "accuracy", "correct_predictions", "masked_mean",
    "itc_then_itm_scores", "recall_at_k", "rows_by_index", "score_pairs", "similarity_matrix",
    "answers_from_logits", "mean_vqa_accuracy", "normalize_answer", "vqa_accuracy", "vqa_score",
    "vqa_score_per_example", "write_submission",
]
