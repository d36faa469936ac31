"""diffusers/PEFT LoRA: ``unet.``/``text_encoder[_2]``/``transformer.`` module paths with ``lora_A``/``lora_B``.

Alpha is not a tensor here: diffusers writes the PEFT ``LoraConfig`` as JSON under the ``lora_adapter_metadata``
metadata key (``{"unet.r": 4, "unet.lora_alpha": 8, "unet.alpha_pattern": {...}}``), and each module's alpha is
``lora_alpha`` unless an ``alpha_pattern`` entry matches its path, the way PEFT's ``get_pattern_key`` matches;
``use_rslora`` marks every module of its component (scale alpha/√rank). Without that config loaders assume alpha =
rank. Module paths saved without the component prefix (a bare ``transformer_blocks.0.attn.to_q``) are diffusers too;
their component is read from the path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lorahub.formats.base import Layout, Module
from lorahub.formats.grouping import Grouped, Keys, Metadata, Scheme, group, meta_text, mostly, split_role
from lorahub.formats.naming import DIFFUSERS_BARE_ROOTS, DIFFUSERS_PREFIXES, KNOWN, KOHYA_SUFFIXES, PEFT_SUFFIXES

SCHEME = Scheme(prefixes=DIFFUSERS_PREFIXES, suffixes={**KOHYA_SUFFIXES, **PEFT_SUFFIXES}, bare=KNOWN)
METADATA_KEY = "lora_adapter_metadata"
_PREFIXES = tuple(DIFFUSERS_PREFIXES)
_REGEX_CHARS = frozenset("*+?{}[]()|^$\\")
_GROUPING = frozenset("()|")
_QUANTIFIERS = "*+?{"
_MAX_REGEXES = 8
_MAX_REGEX_LENGTH = 256
_CONTROL_NORM = re.compile(r"(?:transformer\.)?(?:single_)?transformer_blocks\.[0-9]{1,6}\.attn\.norm_(?:added_)?[qk]")
"""A FLUX Control LoRA's QK-norm weight as diffusers names it (``transformer.transformer_blocks.0.attn.norm_q.weight``,
``FluxLoraLoaderMixin._control_lora_supported_norm_keys``): the whole weight, which replaces the model's."""
r"""``alpha_pattern`` keys come from the file, so regexes are bounded: plain module paths (the keys diffusers writes)
are matched literally, and only a few short regex-looking keys with no groups and at most one quantifier run as
regexes, tried at each dotted suffix rather than behind PEFT's ``(.*\.)?`` (which would add a second quantifier).
Backtracking then stays linear per start, so a crafted header cannot stall reading it. Other regexes are matched
literally and named in the layout's notes."""


def _diffusers_key(key: str) -> bool:
    if key.startswith(_PREFIXES):
        return True
    return key.partition(".")[0] in DIFFUSERS_BARE_ROOTS and split_role(key, SCHEME.suffixes) is not None


def _detect(keys: Keys, metadata: Metadata) -> bool:
    return mostly(keys, _diffusers_key)


@dataclass(frozen=True)
class AlphaPattern:
    """One ``alpha_pattern`` entry: matched literally, and as PEFT's regex when it is a (bounded) regex."""

    literal: str
    regex: re.Pattern[str] | None
    alpha: float | None

    def matches(self, path: str) -> bool:
        r"""PEFT's ``re.match(rf"(.*\.)?({key})$", path)``: the key matches the whole path or a dotted suffix."""
        if path == self.literal or path.endswith("." + self.literal):
            return True
        if self.regex is None:
            return False
        starts = [0, *(i + 1 for i, char in enumerate(path) if char == ".")]
        return any(self.regex.fullmatch(path, start) for start in starts)


@dataclass(frozen=True)
class AdapterConfig:
    """What of a component's PEFT ``LoraConfig`` decides alpha."""

    lora_alpha: float | None
    alpha_patterns: list[AlphaPattern]
    use_rslora: bool


def adapter_configs(metadata: Metadata) -> dict[str, AdapterConfig]:
    """The PEFT config per component prefix (``unet``, ``text_encoder``, …); empty when absent or malformed."""
    try:
        data = json.loads(meta_text(metadata, METADATA_KEY))
    except (ValueError, RecursionError):
        return {}
    raw: dict[str, dict[str, Any]] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            component, dot, name = str(key).partition(".")
            if dot:
                raw.setdefault(component, {})[name] = value
    return {
        component: AdapterConfig(
            lora_alpha=_number(fields.get("lora_alpha")),
            alpha_patterns=alpha_patterns(fields.get("alpha_pattern")),
            use_rslora=fields.get("use_rslora") is True,
        )
        for component, fields in raw.items()
    }


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def alpha_patterns(patterns: Any) -> list[AlphaPattern]:
    """The entries in PEFT's matching order; at most ``_MAX_REGEXES`` of them run as regexes."""
    if not isinstance(patterns, dict):
        return []
    compiled: list[AlphaPattern] = []
    regexes = 0
    for pattern, value in patterns.items():
        if not isinstance(pattern, str):
            continue
        regex = None
        if regexes < _MAX_REGEXES and _bounded_regex(pattern):
            regexes += 1
            regex = _compile(pattern)
        compiled.append(AlphaPattern(pattern, regex, _number(value)))
    return compiled


def is_regex(pattern: str) -> bool:
    return bool(_REGEX_CHARS & set(pattern))


def _bounded_regex(pattern: str) -> bool:
    if not is_regex(pattern) or len(pattern) > _MAX_REGEX_LENGTH or _GROUPING & set(pattern):
        return False
    return sum(pattern.count(q) for q in _QUANTIFIERS) <= 1


def _compile(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError):
        return None


def config_alpha(module: Module, configs: Mapping[str, AdapterConfig]) -> float | None:
    """PEFT's alpha for one module: the first matching ``alpha_pattern`` entry, else ``lora_alpha``."""
    component, _, path = module.name.partition(".")
    config = configs.get(component)
    if config is None:
        return None
    for pattern in config.alpha_patterns:
        if pattern.matches(path):
            return pattern.alpha
    return config.lora_alpha


def apply_configs(modules: list[Module], configs: Mapping[str, AdapterConfig]) -> None:
    """Each module's alpha (unless a tensor holds it) and scale rule (``use_rslora``) from its component's config."""
    for module in modules:
        config = configs.get(module.name.partition(".")[0])
        module.rslora = config is not None and config.use_rslora
        if "alpha" not in module.tensors:
            module.config_alpha = config_alpha(module, configs)


def rslora_notes(configs: Mapping[str, AdapterConfig]) -> list[str]:
    return [f"{name}: use_rslora, scale is alpha/sqrt(rank)" for name, c in configs.items() if c.use_rslora]


def _notes(layout: Layout, configs: Mapping[str, AdapterConfig]) -> list[str]:
    if not configs:
        has_alpha = any("alpha" in module.tensors for module in layout.modules)
        return [] if has_alpha else ["no lora_adapter_metadata and no alpha tensors: loaders use alpha = rank"]
    notes = [f"alpha from lora_adapter_metadata for {', '.join(sorted(configs))}"]
    notes += rslora_notes(configs)
    skipped = [p.literal for c in configs.values() for p in c.alpha_patterns if p.regex is None and is_regex(p.literal)]
    if skipped:
        notes.append(f"alpha_pattern entries matched literally, not as regexes: {', '.join(map(repr, skipped[:5]))}")
    return notes


def _control_norms(grouped: Grouped, keys: Keys) -> None:
    """File a FLUX Control LoRA's QK-norm weights (unmatched by the LoRA suffixes) as ``set_weight`` modules."""
    for key in list(grouped.unmatched):
        name, _, leaf = key.rpartition(".")
        if leaf == "weight" and _CONTROL_NORM.fullmatch(name) and name not in grouped.modules:
            grouped.unmatched.remove(key)
            grouped.add(key, keys[key], (name, "transformer", "set_weight"))


class DiffusersFormat:
    """diffusers/PEFT names; alpha comes from the embedded PEFT config."""

    id = "diffusers"
    description = "diffusers/PEFT (unet./text_encoder./transformer. + lora_A/lora_B, lora_adapter_metadata)"

    def detect(self, keys: Keys, metadata: Metadata) -> bool:
        return _detect(keys, metadata)

    def parse(self, keys: Keys, metadata: Metadata) -> Layout:
        grouped = group(keys, SCHEME)
        _control_norms(grouped, keys)
        layout = grouped.layout(self.id)
        configs = adapter_configs(metadata)
        apply_configs(layout.modules, configs)
        layout.notes = _notes(layout, configs)
        return layout


FORMAT = DiffusersFormat()
