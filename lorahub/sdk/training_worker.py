"""``python -m lorahub.sdk.training_worker SPEC``: one of the other processes of a data-parallel run that
:func:`lorahub.sdk.training.train` started (``processes`` > 1). SPEC is the JSON the main process wrote: the home,
the settings and the arguments of its ``train`` call; the launcher's variables (``RANK``, ``WORLD_SIZE``…) are in
the environment. The worker trains its slice of every batch and writes nothing."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from lorahub.sdk.hub import Hub
from lorahub.sdk.training import train
from lorahub.training.config import TrainConfig


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    hub = Hub.open(spec.pop("home"))
    config = TrainConfig.from_card_dict(spec.pop("config"))
    config = dataclasses.replace(config, extra=spec.pop("extra"))
    train(hub=hub, config=config, **spec)


if __name__ == "__main__":
    main(sys.argv[1])
