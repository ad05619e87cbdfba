"""Task kinds as plug-ins: :class:`Task` (one head), :class:`TaskKind` (what a kind does) and the registry."""

from .base import CLASSIFICATION_KINDS, KIND_MODULES, Task, TaskKind, TaskScore, get_kind, register_kind

__all__ = ["CLASSIFICATION_KINDS", "KIND_MODULES", "Task", "TaskKind", "TaskScore", "get_kind", "register_kind"]
