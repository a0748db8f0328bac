"""Torch architectures behind one registry (needs the ``[train]`` extra).

The families are imported here, which runs their ``@register_model`` decorators (the registry itself imports
no model file)."""

from . import fernet, literature  # noqa: F401  (registers the architectures)
from .registry import count_macs, count_params, create_model, list_models, model_entry, register_model

__all__ = ["count_macs", "count_params", "create_model", "list_models", "model_entry", "register_model"]
