"""Torch architectures behind one registry (needs the ``[train]`` extra)."""

from .registry import count_macs, count_params, create_model, list_models, model_entry, register_model

__all__ = ["count_macs", "count_params", "create_model", "list_models", "model_entry", "register_model"]
