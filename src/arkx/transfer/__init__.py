"""Reusing a trained model: embeddings of a dataset (:func:`embed`) and linear probes on them (:func:`probe`)."""

from __future__ import annotations

from .embed import EmbeddingTable, embed, load_embeddings, save_embeddings
from .probe import ProbeResult, probe

__all__ = ["EmbeddingTable", "ProbeResult", "embed", "load_embeddings", "probe", "save_embeddings"]
