"""Training settings from files and from catalogued adapters, layered, then a run: ``lorahub train --config``,
``--from-kohya`` and ``--like``.

Layers, later ones winning: the adapter named by ``like`` (its card's training record when lorahub trained it,
else the kohya ``ss_*`` metadata in its file), a kohya config, a lorahub settings file, then the settings given
directly (the CLI's flags). Whatever a kohya source held that lorahub cannot map is listed in the result's notes
and in the card's ``training.notes``, never dropped silently.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorahub import errors
from lorahub.training.settings_file import RUN_OPTIONS, Settings, field_values, read_kohya, read_settings

if TYPE_CHECKING:
    from lorahub.sdk.hub import Hub
    from lorahub.sdk.training import TrainResult
    from lorahub.training.loop import Step


def training_settings(
    *,
    config_file: str | os.PathLike[str] | None = None,
    kohya: str | os.PathLike[str] | None = None,
    like: str | None = None,
    hub: Hub | None = None,
    given: Mapping[str, Any] | None = None,
) -> Settings:
    """The layered settings (see the module docstring); ``given`` holds TrainConfig fields and run options."""
    layers: list[Settings] = []
    if like is not None:
        from lorahub.sdk.hub import Hub

        layers.append(like_settings(hub or Hub.open(), like))
    if kohya is not None:
        layers.append(read_kohya(Path(kohya)))
    if config_file is not None:
        layers.append(read_settings(Path(config_file)))
    given = {key: value for key, value in (given or {}).items() if value is not None or key not in RUN_OPTIONS}
    if isinstance(given.get("sample_prompts"), os.PathLike):  # --sample-prompts FILE: its lines are the setting
        from lorahub.training.samples import read_prompt_file

        given["sample_prompts"] = read_prompt_file(Path(given["sample_prompts"]))
    run = {key: str(given.pop(key)) for key in RUN_OPTIONS if key in given}
    layers.append(Settings(field_values(given, "the given settings"), run))
    settings = Settings()
    for layer in layers:
        settings = layer.over(settings)
    return settings


def like_settings(hub: Hub, ref: str) -> Settings:
    """The settings a catalogued adapter was trained with: its card's training record when lorahub trained it,
    else the kohya ``ss_*`` keys of its file."""
    from lorahub.files.safetensors import read_header
    from lorahub.sdk.locating import version_file
    from lorahub.sdk.training import TRAINING_SCHEMA
    from lorahub.training.settings_file import from_card, from_metadata

    version = hub.version(ref)
    training = hub.signed_card(version).card.training
    if training and training.get("schema") == TRAINING_SCHEMA:
        trigger = training.get("dataset", {}).get("trigger")
        return from_card(training["hyperparameters"], trigger, f"the training record of {version.ref}")
    metadata = read_header(version_file(hub, version).path).metadata
    if not any(key.startswith("ss_") for key in metadata):
        raise errors.TrainingError(
            f"{version.ref} records no training settings: no lorahub training record, no kohya ss_* metadata",
            hint="Give the settings with --config FILE.toml or as options.",
        )
    return from_metadata(metadata, f"the ss_* metadata of {version.ref}")


def train_from(
    *,
    config_file: str | os.PathLike[str] | None = None,
    kohya: str | os.PathLike[str] | None = None,
    like: str | None = None,
    hub: Hub | None = None,
    on_step: Callable[[Step], None] | None = None,
    device: str | None = None,
    resume: str | os.PathLike[str] | None = None,
    **given: Any,
) -> TrainResult:
    """Train with the layered settings (:func:`training_settings`); ``given`` holds TrainConfig fields and run
    options (``base``, ``data``, ``name``, …), each replacing what the files say."""
    from lorahub.sdk.hub import Hub
    from lorahub.sdk.training import train

    hub = hub or Hub.open()
    settings = training_settings(config_file=config_file, kohya=kohya, like=like, hub=hub, given=given)
    run = dict(settings.run)
    missing = [key for key in ("base", "data") if key not in run]
    if missing:
        raise errors.TrainingError(
            f"no {' and no '.join(missing)} to train with",
            hint="Give --base and --data, or base = … and data = … in the --config file.",
        )
    return train(
        run["base"], run["data"], config=settings.train_config(), hub=hub, on_step=on_step, device=device,
        resume=resume, notes=settings.notes, name=run.get("name"), trigger=run.get("trigger"),
        license=run.get("license"), prior=run.get("prior"), sources=run.get("sources"), manifest=run.get("manifest"),
    )  # fmt: skip
