"""Training settings as a file: lorahub's TOML schema (read and written), and kohya configs read through
:mod:`lorahub.training.kohya`.

The schema is flat: every :class:`~lorahub.training.config.TrainConfig` field under its own name, plus the run
options of :data:`RUN_OPTIONS` (``base``, ``data``, ``name``, ``trigger``, ``license``, ``prior``, ``sources``,
``manifest``) and an optional ``[extra]`` table. Paths (``data``, ``prior``, ``sources``, ``manifest``, and ``base``
when such a folder exists) are relative to the file's folder. An unknown key is refused with the nearest name.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorahub import errors
from lorahub.training import kohya
from lorahub.training.config import TrainConfig

RUN_OPTIONS = ("base", "data", "name", "trigger", "license", "prior", "sources", "manifest")
PATH_OPTIONS = ("data", "prior", "sources", "manifest")


@dataclass(frozen=True)
class Settings:
    """Settings from one or more sources: TrainConfig fields, run options, and what could not be mapped."""

    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    run: Mapping[str, str] = dataclasses.field(default_factory=dict)
    sources: tuple[str, ...] = ()
    unmapped: tuple[str, ...] = ()

    def over(self, below: Settings) -> Settings:
        """These settings on top of ``below`` (each key of self wins)."""
        return Settings(
            {**below.config, **self.config},
            {**below.run, **self.run},
            below.sources + self.sources,
            below.unmapped + self.unmapped,
        )

    def train_config(self) -> TrainConfig:
        """The TrainConfig of these settings over the defaults (not yet checked: :meth:`TrainConfig.check`)."""
        return dataclasses.replace(TrainConfig(), **self.config)

    @property
    def notes(self) -> list[str]:
        """What a run records about where its settings came from."""
        notes = [f"settings from {source}" for source in self.sources]
        return notes + [f"not mapped: {item}" for item in self.unmapped]

    def to_toml(self) -> str:
        """The settings as a file ``--config`` reads back (every TrainConfig field; unset ones as comments)."""
        lines = [f"# {note}" for note in self.notes]
        lines += [f"{key} = {_toml(self.run[key])}" for key in RUN_OPTIONS if key in self.run]
        config = self.train_config()
        extra = config.extra
        for f in dataclasses.fields(TrainConfig):
            value = getattr(config, f.name)
            if f.name == "extra":
                continue
            lines.append(f"# {f.name} = (unset)" if value is None else f"{f.name} = {_toml(value)}")
        if extra:
            lines += ["", "[extra]"] + [f"{key} = {_toml(value)}" for key, value in sorted(extra.items())]
        return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    """One TOML value: JSON's string escapes are TOML's; floats keep their repr (``0.0001``, ``1e-05``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


# --- reading -------------------------------------------------------------------------------------------------------


def read_settings(path: Path) -> Settings:
    """A lorahub settings file (the module docstring's schema)."""
    values = _load(path, toml_only=True)
    known = [f.name for f in dataclasses.fields(TrainConfig)] + list(RUN_OPTIONS)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise errors.TrainingError(
            f"{path}: unknown setting {unknown[0]!r}" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""),
            hint=_nearest(unknown[0], known),
        )
    run = {key: _run_value(path, key, values[key]) for key in RUN_OPTIONS if key in values}
    config = field_values({k: v for k, v in values.items() if k not in RUN_OPTIONS}, str(path))
    return Settings(config, run, (str(path),))


def read_kohya(path: Path) -> Settings:
    """A kohya sd-scripts training config (``.toml``, or the kohya_ss GUI's ``.json``) as lorahub settings."""
    mapped = kohya.from_kohya_config(_load(path, toml_only=False))
    return Settings(
        field_values(mapped.config, str(path)), mapped.run, (f"kohya config {path}",), tuple(mapped.unmapped)
    )


def from_metadata(metadata: Mapping[str, str], source: str) -> Settings:
    """The settings in a kohya-trained file's ``ss_*`` header."""
    mapped = kohya.from_ss_metadata(metadata)
    return Settings(field_values(mapped.config, source), mapped.run, (source,), tuple(mapped.unmapped))


def from_card(hyperparameters: Mapping[str, Any], trigger: str | None, source: str) -> Settings:
    """The settings of a lorahub-trained version, from its card's ``training.hyperparameters``."""
    config = TrainConfig.from_card_dict(dict(hyperparameters))
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(TrainConfig) if f.name != "extra"}
    recorded = {name: value for name, value in fields.items() if name in hyperparameters}
    return Settings(recorded, {"trigger": trigger} if trigger else {}, (source,))


def _load(path: Path, *, toml_only: bool) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise errors.PathNotFoundError(f"settings file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        as_json = path.suffix.lower() == ".json" and not toml_only
        values = json.loads(text) if as_json else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise errors.TrainingError(
            f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'} ({exc})"
        ) from None
    if not isinstance(values, dict):
        raise errors.TrainingError(f"{path}: expected a table of settings")
    return values


def _run_value(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise errors.TrainingError(f"{path}: {key} must be a non-empty string, not {value!r}")
    if key in PATH_OPTIONS or (key == "base" and (path.parent / value).exists()):
        return str(path.parent / value)
    return value


def _nearest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    listing = f"Known settings: {', '.join(sorted(known))}."
    return f"Did you mean {close[0]!r}? {listing}" if close else listing


# --- types ---------------------------------------------------------------------------------------------------------


def field_values(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``values`` checked against the TrainConfig field types (TOML and JSON give ints for whole floats, lists
    for tuples): a wrong type names the setting instead of failing later."""
    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for name, value in values.items():
        try:
            out[name] = _typed(hints[name], value)
        except (TypeError, ValueError):
            raise errors.TrainingError(
                f"{where}: setting {name} = {value!r} is not a {_describe(hints[name])}",
                hint="See the settings table in docs/training.md.",
            ) from None
    return out


def _typed(hint: Any, value: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, _union_type()) and type(None) in args:
        if value is None:
            return None
        return _typed(next(a for a in args if a is not type(None)), value)
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(value)
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise TypeError(value)
        items = args[:1] * len(value) if args[-1:] == (Ellipsis,) else args
        if len(items) != len(value):
            raise ValueError(value)
        return tuple(_typed(a, v) for a, v in zip(items, value, strict=True))
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(value)
        return dict(value)
    return _scalar(hint, value)


def _scalar(hint: Any, value: Any) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError(value)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(value)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(value)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError(value)
        return value
    raise TypeError(hint)


def _union_type() -> Any:
    import types

    return types.UnionType


SCALAR_NAMES = {int: "whole number", float: "number", bool: "boolean (true or false)", str: "string"}


def _describe(hint: Any) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if hint in SCALAR_NAMES:
        return SCALAR_NAMES[hint]
    return str(hint).replace("typing.", "")
