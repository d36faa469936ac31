"""Training LoRA adapters with diffusers + peft, recording how each was made.

``lorahub.train(...)`` (:mod:`lorahub.sdk.training`) is the entry point: it reads the dataset and its consent,
runs :class:`lorahub.training.loop.Trainer`, writes kohya-format files with ``ss_*``/``modelspec.*`` metadata and
catalogues them with a signed card whose ``training`` field is the run's lineage. This package is named
``training`` rather than ``train`` because ``lorahub.train`` is that SDK function: a subpackage of the same name
would replace it on the package object the first time it was imported.

Light to import: torch, diffusers and peft load inside the functions that use them.
"""
