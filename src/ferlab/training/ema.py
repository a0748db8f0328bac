"""Exponential moving average of a model's weights (the "EMA" or Polyak average of the training loop).

The average is a second copy of the network whose floating-point parameters and buffers (BatchNorm running
statistics included) follow the trained ones after every optimiser step:
``avg <- d * avg + (1 - d) * current``, with the decay warmed up as ``min(d, (1 + n) / (10 + n))`` so the
first steps of a run from scratch are not dominated by the random initialisation.  Validation, the kept
checkpoint and ``model.safetensors`` then use the average; training continues on the raw weights.
"""

from __future__ import annotations

import copy

import torch


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay, self.updates = float(decay), 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        # (average, trained) tensor pairs, made once: the trained model's tensors keep their identity
        self._pairs = list(zip(self.module.state_dict().values(), model.state_dict().values()))

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average, after an optimiser step of the model it was made from."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, cur in self._pairs:
            if avg.is_floating_point():
                avg.lerp_(cur.detach(), 1.0 - d)
            else:
                avg.copy_(cur)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "weights": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["weights"])
