"""Training (needs the ``[train]`` extra)."""

from .config import TrainConfig, load_config
from .trainer import Trainer, predict_logits, resume, train

__all__ = ["TrainConfig", "Trainer", "load_config", "predict_logits", "resume", "train"]
