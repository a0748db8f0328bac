"""Training (needs the ``[train]`` extra).

The names below are loaded when first used, so that ``ferlab.training.config`` and ``ferlab.training.rundir``
(reading recipes and run directories) import without torch.
"""

from importlib import import_module

_HOMES = {"TrainConfig": "config", "load_config": "config", "Trainer": "trainer", "predict_logits": "forward",
          "train": "launch", "resume": "launch", "RunDir": "rundir", "load_run": "build"}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
