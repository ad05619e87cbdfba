"""arkx: one chest X-ray foundation model from many differently labelled public datasets.

The public API (see :mod:`arkx.api`): ``pretrain``, ``resume``, ``load_model``, ``teacher_encoder``,
``read_dataset``, ``inspect_dataset``, ``synthesize``, ``load_config``.
"""

from __future__ import annotations

__version__ = "0.1.0"

_API = {
    "pretrain": "arkx.api", "resume": "arkx.api", "load_model": "arkx.api", "teacher_encoder": "arkx.api",
    "inspect_dataset": "arkx.api", "build_from_config": "arkx.api", "synthesize": "arkx.api", "export_model": "arkx.api",
    "read_dataset": "arkx.data.adapters", "load_config": "arkx.config", "ArkConfig": "arkx.config",
    "build_model": "arkx.models.ark", "ArkModel": "arkx.models.ark",
    "load_released": "arkx.models.released", "load_foundation_x": "arkx.models.foundation_x_checkpoint",
    "export_timm": "arkx.models.export", "model_info": "arkx.models.export",
    "embed": "arkx.transfer", "probe": "arkx.transfer", "load_embeddings": "arkx.transfer",
    "EmbeddingTable": "arkx.transfer", "ProbeResult": "arkx.transfer",
    "predict": "arkx.transfer.predict", "HeadModule": "arkx.transfer.predict",
    "zeroshot": "arkx.transfer.zeroshot", "ZeroShotResult": "arkx.transfer.zeroshot",
    "ImageDataset": "arkx.data.dataset", "load_image": "arkx.data.dataset", "preprocess": "arkx.data.dataset",
    "collate": "arkx.data.dataset",
    "finetune": "arkx.transfer.finetune", "FinetuneResult": "arkx.transfer.finetune",
    "evaluate": "arkx.api", "compare_runs": "arkx.api", "compare_models": "arkx.api",
    "report": "arkx.api",
    "experiment": "arkx.experiments", "ExperimentResult": "arkx.experiments",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str):
    # Imported lazily so `arkx --help` and `import arkx` stay fast (torch and timm load on first use).
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'arkx' has no attribute {name!r}")
