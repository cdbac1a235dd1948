"""Flax Linen BridgeTower: pure modules, no I/O."""
from bridgetower_jax.models.config import (BridgeTowerConfig, ComputeConfig, TextConfig, VisionConfig, PRESETS,
                                           preset)
from bridgetower_jax.models.bridgetower import (
    BridgeTowerContrastiveOutput, BridgeTowerForContrastiveLearning, BridgeTowerForImageAndTextRetrieval,
    BridgeTowerForMaskedLM, BridgeTowerForNLVR2, BridgeTowerForPreTraining, BridgeTowerForRetrievalRank,
    BridgeTowerForSNLIVE, BridgeTowerForVQA, BridgeTowerModel, BridgeTowerModelOutput, MaskedLMOutput,
    PreTrainingOutput, SequenceClassifierOutput)

__all__ = [
    "BridgeTowerConfig", "ComputeConfig", "TextConfig", "VisionConfig", "PRESETS", "preset",
    "BridgeTowerModel", "BridgeTowerForMaskedLM", "BridgeTowerForImageAndTextRetrieval",
    "BridgeTowerForContrastiveLearning", "BridgeTowerForPreTraining", "BridgeTowerForVQA", "BridgeTowerForSNLIVE",
    "BridgeTowerForNLVR2", "BridgeTowerForRetrievalRank",
    "BridgeTowerModelOutput", "MaskedLMOutput", "SequenceClassifierOutput", "BridgeTowerContrastiveOutput",
    "PreTrainingOutput",
]
