"""Keys that look like a known layout with a naming error: what loaders expect instead, and the renaming that
repairs them when it is unambiguous.

Why: a LoRA whose keys were renamed by hand or by a careless script (a separator changed, a prefix doubled or
dropped, a suffix spelled another way, the case changed) is skipped key by key by every loader, which say so in a
log nobody reads: the file "loads and does nothing". Grouping accepts a name only when its whole pattern fits
(:func:`lorahub.formats.grouping.component_of`), so such keys are left unmatched; here they are read again against
each layout's :class:`Grammar` with the damage kinds of :data:`DAMAGES` undone, at most one kind per part of the key
(prefix, path, suffix). The renaming with the fewest undone damages wins; two renamings that tie, or two keys that
would get one name, make the intent ambiguous and nothing is renamed for them.

Cost: nothing beyond one pass over the modules for a file whose keys all fit (the usual case). Otherwise the
grammar is chosen on a bounded sample of the unmatched keys and each key is then read once against that grammar: the
work stays linear in the number of keys, whatever the file.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from lorahub.files.safetensors import TensorInfo
from lorahub.formats import comfyui, diffusers, diffusers_old, kohya, onetrainer, peft
from lorahub.formats.base import Layout, Module
from lorahub.formats.grouping import Scheme, component_of, meta_text, split_role
from lorahub.formats.layers import is_whole
from lorahub.formats.naming import (
    DIFFUSERS_OLD_SUFFIXES,
    KOHYA_ALL_SUFFIXES,
    PEFT_SUFFIXES,
    XLABS_SUFFIXES,
    guess_component,
    resolve_component,
    strip_prefix,
)

Keys = Mapping[str, TensorInfo]
Parts = tuple[str, ...]

_SEPARATOR_CHARS = "._-"
_SPLIT = re.compile(r"[._\-]")
MAX_SUFFIX_PARTS = 5
"""The longest suffix (``lora_linear_layer.down.weight``) has five parts."""
SAMPLE = 64
"""Unmatched keys read against every grammar to choose one; the rest are read against that grammar only."""
LOADERS = "A1111/Forge, ComfyUI, diffusers"

NOT_REPAIRED_SUFFIXES = frozenset({"weight"})
"""IA3's bare ``weight`` is never a repair target: every key of a full checkpoint ends so."""
SUFFIX_ALIASES: Mapping[Parts, Parts] = {
    ("lora", "alpha"): ("alpha",),
    ("network", "alpha"): ("alpha",),
    ("alphas",): ("alpha",),
    ("weights",): ("weight",),
}
"""Misspellings seen in hand-renamed files, by their lower-case parts (``weights`` anywhere in a suffix)."""


def _parts(text: str) -> Parts:
    return tuple(_SPLIT.split(text))


def _normal(parts: Parts) -> Parts:
    lowered = tuple("weight" if part == "weights" else part for part in (p.lower() for p in parts))
    return SUFFIX_ALIASES.get(lowered, lowered)


# --- grammars ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grammar:
    """How one layout spells keys, for reading damaged ones: its scheme, its own spelling of each role, the prefix a
    name of each component takes when the file shows none, and case/separator-blind patterns for its prefixes."""

    format: str
    scheme: Scheme
    spelling: Mapping[str, str]
    home: Mapping[str, str]
    exact: Mapping[Parts, str] = field(init=False, repr=False)
    lower: Mapping[Parts, str] = field(init=False, repr=False)
    normal: Mapping[Parts, str] = field(init=False, repr=False)
    lenient: tuple[tuple[str, re.Pattern[str]], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        suffixes = [s for s in self.scheme.suffixes if s not in NOT_REPAIRED_SUFFIXES]
        object.__setattr__(self, "exact", {_parts(s): s for s in reversed(suffixes)})
        object.__setattr__(self, "lower", {_parts(s.lower()): s for s in reversed(suffixes)})
        object.__setattr__(self, "normal", {_normal(_parts(s)): s for s in reversed(suffixes)})
        patterns = tuple(
            (prefix, re.compile("".join("[._-]" if c in _SEPARATOR_CHARS else re.escape(c) for c in prefix), re.I))
            for prefix, _ in self.scheme.table
        )
        object.__setattr__(self, "lenient", patterns)

    def fits(self, key: str) -> bool:
        split = split_role(key, self.scheme.suffixes)
        return split is not None and component_of(split[0], self.scheme) is not None


def _spelling(*tables: Mapping[str, str]) -> dict[str, str]:
    """Role → the first suffix spelling it in the tables, in order."""
    spelling: dict[str, str] = {}
    for table in tables:
        for suffix, role in table.items():
            if suffix not in NOT_REPAIRED_SUFFIXES:
                spelling.setdefault(role, suffix)
    return spelling


_KOHYA_HOME = {
    "unet": "lora_unet_",
    "transformer": "lora_unet_",
    "text_encoder": "lora_te_",
    "text_encoder_2": "lora_te2_",
    "text_encoder_3": "lora_te3_",
}
_DIFFUSERS_HOME = {
    "unet": "unet.",
    "transformer": "transformer.",
    "text_encoder": "text_encoder.",
    "text_encoder_2": "text_encoder_2.",
    "text_encoder_3": "text_encoder_3.",
}
_COMFY_HOME = {
    "unet": "diffusion_model.",
    "transformer": "diffusion_model.",
    "text_encoder": "text_encoders.clip_l.",
    "text_encoder_2": "text_encoders.clip_g.",
    "text_encoder_3": "text_encoders.t5xxl.",
}

GRAMMARS: tuple[Grammar, ...] = (
    Grammar("kohya", kohya.SCHEME, _spelling(KOHYA_ALL_SUFFIXES), _KOHYA_HOME),
    Grammar("diffusers", diffusers.SCHEME, _spelling(PEFT_SUFFIXES), _DIFFUSERS_HOME),
    Grammar("diffusers-old", diffusers_old.SCHEME, _spelling(DIFFUSERS_OLD_SUFFIXES), _DIFFUSERS_HOME),
    Grammar("comfyui", comfyui.SCHEME, _spelling(KOHYA_ALL_SUFFIXES, PEFT_SUFFIXES), _COMFY_HOME),
    Grammar("peft", peft.SCHEME, _spelling(PEFT_SUFFIXES), {}),
    Grammar("onetrainer", onetrainer.SCHEME, _spelling(KOHYA_ALL_SUFFIXES), {"transformer": "lora_transformer_"}),
)
"""The layouts damaged keys are read against. LyCORIS shares kohya's grammar; ai-toolkit's is ComfyUI's and
diffusers' names with PEFT suffixes; cloneofsimo, XLabs and BFL Control names are too specific to be guessed at."""

GRAMMAR_OF_FORMAT = {"lycoris": "kohya", "ai-toolkit": "comfyui"}

FOREIGN_ROLES: Mapping[Parts, str] = {
    _normal(_parts(suffix)): role
    for table in (KOHYA_ALL_SUFFIXES, PEFT_SUFFIXES, DIFFUSERS_OLD_SUFFIXES, XLABS_SUFFIXES)
    for suffix, role in table.items()
    if suffix not in NOT_REPAIRED_SUFFIXES
}
"""Every layout's suffixes by their normal parts, for a key that carries another layout's spelling of a role."""


# --- damage kinds --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What the rest of the file says: the prefixes its well-named keys use, per component."""

    prefixes: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class Damage:
    """One kind of naming damage: which part of a key it hits and how it is undone. ``undo`` gets that part (the
    separator before a suffix and the suffix, or the module name) and yields the repaired spellings."""

    code: str
    part: str
    label: str
    undo: Callable[[str, Grammar, Context], Iterator[str]] | None
    """None for a damage read from a whole module rather than one key (see :func:`_alpha_as_scale`)."""


def _suffix_separator(tail: str, grammar: Grammar, ctx: Context) -> Iterator[str]:
    """``lora_down_weight``, ``lora.down.weight`` or ``_alpha`` for ``lora_down.weight`` or ``.alpha``: the parts are
    right, the separators are not (``tail`` starts with the separator that preceded it)."""
    suffix = grammar.exact.get(_parts(tail[1:]))
    if suffix is not None and (tail[0] != "." or tail[1:] != suffix):
        yield suffix


def _suffix_case(tail: str, grammar: Grammar, ctx: Context) -> Iterator[str]:
    suffix = grammar.lower.get(_parts(tail[1:].lower()))
    if suffix is not None and _parts(tail[1:]) != _parts(suffix):
        yield suffix


def _suffix_spelling(tail: str, grammar: Grammar, ctx: Context) -> Iterator[str]:
    suffix = grammar.normal.get(_normal(_parts(tail[1:])))
    if suffix is not None and _parts(tail[1:].lower()) != _parts(suffix.lower()):
        yield suffix


def _foreign_suffix(tail: str, grammar: Grammar, ctx: Context) -> Iterator[str]:
    """Another layout's spelling of a role (``lora_A.weight`` or ``lora.up.weight`` on kohya names)."""
    normal = _normal(_parts(tail[1:]))
    role = FOREIGN_ROLES.get(normal)
    if role is not None and normal not in grammar.normal and role in grammar.spelling:
        yield grammar.spelling[role]


def _lenient(module: str, grammar: Grammar) -> tuple[str, str, str] | None:
    """``(found, prefix, rest)``: the grammar's longest prefix matched ignoring case and separators."""
    for prefix, pattern in grammar.lenient:
        match = pattern.match(module)
        if match is not None:
            return match.group(0), prefix, module[match.end() :]
    return None


def _doubled_prefix(module: str, grammar: Grammar, ctx: Context) -> Iterator[str]:
    """``lora_unet_lora_unet_…``, ``unet.unet.…``."""
    found = _lenient(module, grammar)
    if found is None:
        return
    _, prefix, rest = found
    again = _lenient(rest, grammar)
    while again is not None and again[1] == prefix:
        rest = again[2]
        again = _lenient(rest, grammar)
    if len(rest) < len(found[2]):
        yield prefix + rest


def _prefix_case(module: str, grammar: Grammar, ctx: Context) -> Iterator[str]:
    found = _lenient(module, grammar)
    if found is not None and found[0] != found[1] and found[0].lower() == found[1].lower():
        yield found[1] + found[2]


def _prefix_separator(module: str, grammar: Grammar, ctx: Context) -> Iterator[str]:
    """``lora.unet.``, ``lora-unet-``, ``unet_`` for ``lora_unet_`` and ``unet.``."""
    found = _lenient(module, grammar)
    if found is not None and found[0].lower() != found[1].lower():
        yield found[1] + found[2]


def _missing_prefix(module: str, grammar: Grammar, ctx: Context) -> Iterator[str]:
    """A module path that names a known layer but carries no prefix: the prefix the file's other keys use for that
    component, else the layout's usual one."""
    if _lenient(module, grammar) is not None:
        return
    component = guess_component(module)
    if component == "unknown":
        return
    used = ctx.prefixes.get(component)
    home = grammar.home.get(component)
    style = "." if "." in module else "_"  # a flattened path lost a kohya prefix, a dotted one a diffusers prefix
    for prefix in used or ((home,) if home else ()):
        if prefix.endswith(style):
            yield prefix + module


def _flattened_path(module: str, grammar: Grammar, ctx: Context) -> Iterator[str]:
    """kohya names flatten the module path with ``_``: dots in it are a changed separator."""
    rest, rule = strip_prefix(module, grammar.scheme.table)
    if rule is not None and module[: len(module) - len(rest)].endswith("_") and "." in rest:
        yield module[: len(module) - len(rest)] + rest.replace(".", "_")


DAMAGES: tuple[Damage, ...] = (
    Damage("separator", "suffix", "a separator changed ('.' ↔ '_')", _suffix_separator),
    Damage("case", "suffix", "letters in the wrong case", _suffix_case),
    Damage("suffix-spelling", "suffix", "the suffix misspelt", _suffix_spelling),
    Damage("foreign-suffix", "suffix", "another layout's suffix", _foreign_suffix),
    Damage("doubled-prefix", "prefix", "the prefix written twice", _doubled_prefix),
    Damage("case", "prefix", "letters in the wrong case", _prefix_case),
    Damage("separator", "prefix", "a separator changed ('.' ↔ '_')", _prefix_separator),
    Damage("missing-prefix", "prefix", "the prefix missing", _missing_prefix),
    Damage("separator", "path", "a separator changed ('.' ↔ '_')", _flattened_path),
    Damage("alpha-as-scale", "module", "alpha stored as A1111's 'scale'", None),
)
"""Each damage kind undone on its own part; a key's repair combines at most one per part. sd-scripts never writes
A1111's per-module ``scale``: in a file whose ``ss_network_module`` names sd-scripts, a module with ``scale`` and no
``alpha`` had its alpha renamed (loaders other than A1111 then use alpha = rank)."""

ALPHA_AS_SCALE = DAMAGES[-1]
LABELS = {damage.code: damage.label for damage in DAMAGES}
_BY_PART = {part: tuple(d for d in DAMAGES if d.part == part) for part in ("suffix", "prefix", "path")}


def _undo(damage: Damage, part: str, grammar: Grammar, ctx: Context) -> Iterator[str]:
    return damage.undo(part, grammar, ctx) if damage.undo is not None else iter(())


# --- reading one key -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    key: str
    damages: tuple[str, ...]

    @property
    def cost(self) -> int:
        return len(self.damages)


def _distance(a: str, b: str) -> int:
    """Characters changed, aligned at whichever end keeps more of them: a cheap stand-in for edit distance that ranks
    ``x.lora_down.weight`` (one separator) above ``x_lora.lora_down.weight`` for ``x_lora_down.weight``."""
    left = sum(1 for p, q in zip(a, b, strict=False) if p != q)
    right = sum(1 for p, q in zip(reversed(a), reversed(b), strict=False) if p != q)
    return abs(len(a) - len(b)) + min(left, right)


def _suffixes(key: str, grammar: Grammar, ctx: Context) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """``(module, suffix, damages)`` for every split of the key's last parts into a grammar suffix."""
    seps = [i for i, char in enumerate(key) if char in _SEPARATOR_CHARS][-MAX_SUFFIX_PARTS:]
    for cut in reversed(seps):
        if cut == 0:
            continue
        module, tail = key[:cut], key[cut:]
        if tail[0] == "." and tail[1:] in grammar.scheme.suffixes and tail[1:] not in NOT_REPAIRED_SUFFIXES:
            yield module, tail[1:], ()
        for damage in _BY_PART["suffix"]:
            for suffix in _undo(damage, tail, grammar, ctx):
                yield module, suffix, (damage.code,)


def _modules(module: str, grammar: Grammar, ctx: Context) -> Iterator[tuple[str, tuple[str, ...]]]:
    prefixed = [(module, ())] + [(new, (d.code,)) for d in _BY_PART["prefix"] for new in _undo(d, module, grammar, ctx)]
    for name, damages in prefixed:
        yield name, damages
        for damage in _BY_PART["path"]:
            for new in _undo(damage, name, grammar, ctx):
                yield new, (*damages, damage.code)


def candidates(key: str, grammar: Grammar, ctx: Context) -> list[Candidate]:
    """Every repaired spelling of ``key`` that fits the grammar, with the damages it undoes (none: it fits as is)."""
    found: list[Candidate] = []
    for module, suffix, suffix_damages in _suffixes(key, grammar, ctx):
        for name, name_damages in _modules(module, grammar, ctx):
            if component_of(name, grammar.scheme) is not None:
                found.append(Candidate(f"{name}.{suffix}", (*name_damages, *suffix_damages)))
    return found


def _best(key: str, options: list[Candidate]) -> list[Candidate]:
    """The cheapest distinct repairs, fewest damages first, then fewest characters changed (more than one:
    ambiguous)."""
    if not options:
        return []
    ranked = {option.key: (option.cost, _distance(key, option.key), option) for option in options}
    cost = min(rank[:2] for rank in ranked.values())
    return [option for rank in ranked.values() if rank[:2] == cost for option in (rank[2],)]


# --- the file ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rename:
    """One misnamed key and the name loaders expect for it."""

    key: str
    expected: str
    damages: tuple[str, ...]


@dataclass
class Diagnosis:
    """What the naming of a file costs: keys misnamed (with their repair, or the candidates when ambiguous), the
    modules a loader would read as the file is, and the modules the misnamed keys take from it."""

    grammar: str | None = None
    renames: list[Rename] = field(default_factory=list)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)
    readable_modules: int = 0
    fitting: list[str] = field(default_factory=list)
    """Unmatched keys that fit the grammar as they are (the alphas of a kohya file detected by its misnamed weights
    as another layout): not misnamed, and not unknown either."""
    lost_modules: int = 0
    repaired_modules: set[str] = field(default_factory=set)
    lora_like: bool = False

    @property
    def misnamed(self) -> list[str]:
        return [r.key for r in self.renames] + list(self.ambiguous)

    @property
    def damages(self) -> list[str]:
        kinds = {code: None for r in self.renames for code in r.damages}
        return list(kinds)


def _suspects(layout: Layout) -> list[str]:
    """Keys no whole module of a known layout explains: unmatched ones, those of incomplete modules, and every key of
    a file no layout claimed."""
    suspects = list(layout.unmatched)
    for module in layout.modules:
        if layout.format == "unknown" or not is_whole(module):
            suspects += [info.name for info in module.tensors.values()]
    return suspects


def _sample(keys: Sequence[str]) -> Sequence[str]:
    """A fixed pseudo-random sample: a stride would see only one role of files whose keys repeat in threes."""
    return keys if len(keys) <= SAMPLE else random.Random(len(keys)).sample(list(keys), SAMPLE)


def _choose(suspects: list[str], detected: str) -> Grammar | None:
    """The grammar that explains most of a sample of the suspect keys, with the fewest damages and then the fewest
    characters changed (``unet.x.lora.down.weights`` is diffusers-old's ``lora.down.weight``, not diffusers'
    ``lora_down.weight``); the detected layout's grammar wins ties."""
    home = GRAMMAR_OF_FORMAT.get(detected, detected)
    ordered = sorted(GRAMMARS, key=lambda g: g.format != home)
    sample = _sample(suspects)
    empty = Context({})
    best, best_rank = None, (0, 0, 0)
    for grammar in ordered:
        hits = cost = distance = 0
        for key in sample:
            options = candidates(key, grammar, empty)
            if options:
                hits += 1
                cost += min(option.cost for option in options)
                distance += min(_distance(key, option.key) for option in options)
        rank = (hits, -cost, -distance)
        if hits and (best is None or rank > best_rank):
            best, best_rank = grammar, rank
    return best


def _context(keys: Keys, grammar: Grammar) -> Context:
    prefixes: dict[str, dict[str, None]] = {}
    for key in keys:
        rest, rule = strip_prefix(key, grammar.scheme.table)
        if rule is not None and grammar.fits(key):
            prefix = key[: len(key) - len(rest)]
            prefixes.setdefault(resolve_component(rule, rest), {})[prefix] = None
    return Context({component: tuple(found) for component, found in prefixes.items()})


def _alpha_as_scale(layout: Layout, metadata: Mapping[str, str]) -> list[Rename]:
    if GRAMMAR_OF_FORMAT.get(layout.format, layout.format) != "kohya":
        return []
    if not meta_text(metadata, "ss_network_module").startswith("networks."):
        return []
    renames = []
    for module in layout.modules:
        scale = module.tensors.get("scale")
        if scale is not None and "alpha" not in module.tensors and scale.name == f"{module.name}.scale":
            renames.append(Rename(scale.name, f"{module.name}.alpha", (ALPHA_AS_SCALE.code,)))
    return renames


def readable(layout: Layout) -> list[Module]:
    """The modules some loader applies: the whole ones of a known layout."""
    if layout.format == "unknown":
        return []
    return [module for module in layout.modules if is_whole(module)]


def diagnose(keys: Keys, metadata: Mapping[str, str], layout: Layout) -> Diagnosis:
    """Read a file's naming: which keys are misnamed, what loaders expect instead, how many modules that costs."""
    diagnosis = Diagnosis(readable_modules=len(readable(layout)), lora_like=bool(layout.modules))
    scale_renames = _alpha_as_scale(layout, metadata)
    suspects = _suspects(layout)
    grammar = _choose(suspects, layout.format) if suspects else None
    if grammar is None and not scale_renames:
        return diagnosis
    renames: dict[str, Rename] = {r.key: r for r in scale_renames}
    if grammar is not None:
        diagnosis.grammar = grammar.format
        ctx = _context(keys, grammar)
        for key in suspects:
            best = _best(key, candidates(key, grammar, ctx))
            if len(best) == 1 and best[0].cost:
                renames[key] = Rename(key, best[0].key, best[0].damages)
            elif len(best) == 1:
                diagnosis.fitting.append(key)
            elif len(best) > 1:
                diagnosis.ambiguous[key] = sorted(c.key for c in best)
    else:
        diagnosis.grammar = GRAMMAR_OF_FORMAT.get(layout.format, layout.format)
    _drop_collisions(keys, renames, diagnosis.ambiguous)
    diagnosis.renames = list(renames.values())
    _count_modules(diagnosis, grammar, layout)
    diagnosis.lora_like = diagnosis.lora_like or bool(diagnosis.misnamed)
    return diagnosis


def _drop_collisions(keys: Keys, renames: dict[str, Rename], ambiguous: dict[str, list[str]]) -> None:
    """Two keys that would get one name, or a name a kept key already has: which tensor was meant is unknowable."""
    claimed: dict[str, list[str]] = {}
    for rename in renames.values():
        claimed.setdefault(rename.expected, []).append(rename.key)
    for name, sources in claimed.items():
        if len(sources) > 1 or (name in keys and name not in renames):
            for key in sources:
                ambiguous[key] = [name]
                del renames[key]


def _count_modules(diagnosis: Diagnosis, grammar: Grammar | None, layout: Layout) -> None:
    """Modules the misnamed keys belong to under their repaired names that no loader reads as the file is (a module
    whose alpha alone is misnamed still loads, at the wrong strength)."""
    scheme = grammar.scheme if grammar is not None else kohya.SCHEME
    targets = [r.expected for r in diagnosis.renames] + [options[0] for options in diagnosis.ambiguous.values()]
    touched = {split[0] for split in (split_role(name, scheme.suffixes) for name in targets) if split is not None}
    diagnosis.repaired_modules = touched
    diagnosis.lost_modules = len(touched - {module.name for module in readable(layout)})


def describe(diagnosis: Diagnosis) -> str:
    """The ``misnamed-keys`` message: what was found, what loaders expect, what it costs."""
    count = len(diagnosis.misnamed)
    labels = ", ".join(LABELS[code] for code in diagnosis.damages) or "names that fit two ways"
    text = f"{count} key(s) look like {diagnosis.grammar} keys with {labels}"
    if diagnosis.renames:
        example = diagnosis.renames[0]
        text += f": found {example.key!r}, loaders expect {example.expected!r}"
    elif diagnosis.ambiguous:
        key, options = next(iter(diagnosis.ambiguous.items()))
        text += f": found {key!r}, which could be {' or '.join(map(repr, options[:3]))}"
    if diagnosis.lost_modules:
        text += f"; {diagnosis.lost_modules} module(s) no loader would read"
    else:
        text += "; loaders ignore these keys"
    if diagnosis.ambiguous:
        text += f"; {len(diagnosis.ambiguous)} key(s) could be repaired more than one way"
    if diagnosis.renames and not diagnosis.ambiguous:
        text += "; `lorahub convert --repair` writes a corrected copy"
    return text
