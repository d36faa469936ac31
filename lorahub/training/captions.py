"""Caption variation each step, as kohya does it: dropout, then tags shuffled behind the first ``keep_tokens``.

Captions are comma-separated tags (``sks, a cat, sitting``). Each time an example is drawn its caption is, with
probability ``dropout``, replaced by the empty caption (the unconditional one); otherwise, with ``shuffle``, the
tags after the first ``keep_tokens`` are put in a random order (the trigger, which lorahub puts first, stays first
with ``keep_tokens = 1``). Every draw comes from the run's data generator, which checkpoints save, so a resumed
run varies its captions exactly as an uninterrupted one.

Text embeddings are cached per caption when the captions do not vary. Dropout alone only needs one more: the empty
caption's, encoded once. Shuffling makes captions that were never seen before, so the text encoders stay loaded
(frozen) and each step's captions are encoded when drawn, as kohya does (it refuses to cache text encoder outputs
with ``shuffle_caption``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lorahub.training.config import TrainConfig


@dataclass(frozen=True)
class CaptionVariation:
    shuffle: bool = False
    keep_tokens: int = 0
    dropout: float = 0.0

    @classmethod
    def of(cls, config: TrainConfig) -> CaptionVariation:
        return cls(config.shuffle_captions, config.keep_tokens, config.caption_dropout)

    @property
    def active(self) -> bool:
        return self.shuffle or self.dropout > 0

    @property
    def encodes_each_step(self) -> bool:
        """Whether captions must be encoded when drawn (the text encoders stay loaded)."""
        return self.shuffle

    def dropped(self, torch: Any, generator: Any) -> bool:
        """One draw: is this caption dropped? (No draw at all when dropout is off.)"""
        return self.dropout > 0 and float(torch.rand((), generator=generator)) < self.dropout

    def shuffled(self, caption: str, torch: Any, generator: Any) -> str:
        """The caption with its tags after the first ``keep_tokens`` in an order drawn from ``generator``."""
        tags = [t.strip() for t in caption.split(",") if t.strip()]
        kept, rest = tags[: self.keep_tokens], tags[self.keep_tokens :]
        if len(rest) > 1:
            rest = [rest[i] for i in torch.randperm(len(rest), generator=generator).tolist()]
        return ", ".join(kept + rest)

    def vary(self, caption: str, torch: Any, generator: Any) -> str | None:
        """The caption to train on this time: ``""`` when dropped, shuffled when asked, else None (the cached
        embedding of the caption as written applies)."""
        if self.dropped(torch, generator):
            return ""
        if self.shuffle:
            return self.shuffled(caption, torch, generator)
        return None
