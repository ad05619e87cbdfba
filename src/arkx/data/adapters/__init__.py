"""Dataset adapters. Each module registers one provider layout; import it here to make it known."""

from .registry import AdapterOptions, AdapterSpec, adapter_names, get_adapter, read_dataset, register

__all__ = ["AdapterOptions", "AdapterSpec", "adapter_names", "get_adapter", "read_dataset", "register"]
