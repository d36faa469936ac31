"""An exponential moving average of the adapter weights: what a run writes when ``ema_decay`` is set.

diffusers' ``EMAModel`` keeps the shadow weights; its decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after n
updates, so a short run's average is not stuck near the (zero-effect) initial adapter. The shadow weights and the
update count travel in the checkpoint, so a resumed run continues the same average.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

STEP_KEY = "ema_step"


class AdapterEMA:
    def __init__(self, params: Sequence[Any], decay: float) -> None:
        training_utils = importlib.import_module("diffusers.training_utils")
        self.params = list(params)
        self.model = training_utils.EMAModel(self.params, decay=decay)

    def update(self) -> None:
        """After each optimizer step."""
        self.model.step(self.params)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the live parameters for the duration (writing the adapter), then the trained
        ones back."""
        self.model.store(self.params)
        self.model.copy_to(self.params)
        try:
            yield
        finally:
            self.model.restore(self.params)

    def tensors(self) -> dict[str, Any]:
        """The shadow weights by parameter index (a checkpoint's ``ema.N`` tensors)."""
        return {f"ema.{i}": p.detach().cpu().contiguous() for i, p in enumerate(self.model.shadow_params)}

    @property
    def step(self) -> int:
        return int(self.model.optimization_step)

    def restore(self, tensors: dict[str, Any], step: int) -> None:
        for index, shadow in enumerate(self.model.shadow_params):
            shadow.data.copy_(tensors[f"ema.{index}"])
        self.model.optimization_step = step
