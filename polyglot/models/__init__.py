"""Flax NNX encoders (dense and MoE) and their task heads."""
from polyglot.models.config import EncoderConfig, MoEConfig, PRESETS, preset
from polyglot.models.encoder import Encoder, EncoderOutput
from polyglot.models.heads import (KINDS, MaskedLM, MultipleChoice, QuestionAnswering,
                                   SequenceClassifier, TokenClassifier, build, pool,
                                   sentence_embeddings)

__all__ = [
    "EncoderConfig", "MoEConfig", "PRESETS", "preset", "Encoder", "EncoderOutput", "MaskedLM",
    "SequenceClassifier", "TokenClassifier", "QuestionAnswering", "MultipleChoice", "KINDS",
    "build", "pool", "sentence_embeddings",
]
