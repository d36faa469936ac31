"""Which base model an adapter was trained for, from its module names and shapes, with the metadata's opinion.

Shapes are facts about the tensors; metadata is what a tool wrote and is often copied or wrong (A1111 decides
SD1 vs SDXL from metadata alone and gets it wrong for stripped files). So each shape fact votes, with a weight,
for the families it is compatible with; the family with the most weight wins, a tie means ``unknown``, and only
then does metadata decide. When both speak and differ, the verdict keeps the shapes and says so.

Architecture facts used (verified against the model definitions where noted, otherwise marked uncertain):

* SD 1.x: UNet cross-attention context 768 (CLIP-L), text encoder width 768, 12 layers.
* SD 2.x: context 1024, text encoder OpenCLIP-H width 1024 (23 layers as diffusers ships it).
* SDXL: context 2048; text encoders CLIP-L 768 (``te1``) and OpenCLIP-G 1280, 32 layers (``te2``); up to 10
  transformer layers per UNet attention block; no attention in the first down block. Refiner: context 1280.
* SD3/3.5: MMDiT ``joint_blocks`` (``x_block``/``context_block``) in SGM naming; diffusers ``transformer_blocks``
  with ``add_q_proj`` and no single blocks at hidden 1536 (Medium, 24 blocks) or 2432 (3.5 Large, 38 blocks).
* FLUX.1: 19 double + 38 single blocks, hidden 3072, ``linear1`` out 21504 (3×3072 + 4×3072 MLP), MLP ratio 4,
  per-block modulation (``img_mod.lin``, ``modulation.lin``).
* FLUX.2 (diffusers ``Flux2Transformer2DModel`` defaults): dev hidden 6144 (48×128), 8 double + 48 single blocks,
  SwiGLU MLP ratio 3 (``linear1`` out 9×hidden, ``img_mlp.0`` out 6×hidden), shared modulation
  (``double_stream_modulation_img``), diffusers ``to_qkv_mlp_proj``/``ff.linear_in``. Uncertain: klein 4B (hidden
  3072, 5+20 blocks) and 9B (hidden 4096?, 6 or 8 double + 24 single) — sources disagree, so only the ratios and
  names are used, never klein block counts.
* Qwen-Image: 60 double-stream ``transformer_blocks`` at hidden 3072 with ``img_mlp``/``txt_mlp``/``img_mod``.
* Anima: Cosmos-Predict2 2B DiT (``blocks.N.self_attn.q_proj``, ``cross_attn``, ``mlp.layer1``,
  ``adaln_modulation_*``, hidden 2048) with a Qwen3-0.6B text encoder (width 1024). A plain Cosmos-Predict2 LoRA
  has the same names; it is reported as ``anima`` too (uncertain distinction).
* Krea-2: native names ``blocks.N.attn.{wq,wk,wv,wo,gate}``, ``txtfusion``, ``tproj``, ``tmlp``, ``txtmlp``,
  ``last.linear`` (from InvokeAI's Krea-2 converter), hidden 6144 in the sample; little else is public (uncertain).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from lorahub.formats.base import Layout
from lorahub.formats.layers import io_dims
from lorahub.formats.naming import (
    COMFY_PREFIXES,
    DIFFUSERS_PREFIXES,
    ONETRAINER_PREFIXES,
    PEFT_PREFIXES,
    by_length,
    flat,
    strip_prefix,
)

FAMILIES = ("sd1", "sd2", "sdxl", "sd3", "flux1", "flux2", "qwen-image", "anima", "krea2", "unknown")
LABELS: Mapping[str, str] = {
    "sd1": "SD 1.x",
    "sd2": "SD 2.x",
    "sdxl": "SDXL",
    "sd3": "SD3",
    "flux1": "FLUX.1",
    "flux2": "FLUX.2",
    "qwen-image": "Qwen-Image",
    "anima": "Anima",
    "krea2": "Krea-2",
    "unknown": "unknown",
}


@dataclass
class FamilyVerdict:
    """The base family, why, what the metadata says, and a sentence when the two disagree."""

    family: str
    evidence: list[str]
    metadata_family: str | None
    metadata_evidence: list[str]
    disagreement: str | None


# --- metadata -----------------------------------------------------------------------------------------------------

BASE_MODEL_VERSIONS: Mapping[str, str] = {
    "sdxl_base_v1-0": "sdxl",
    "flux1": "flux1",
    "5-large": "sd3",
    "5-large-turbo": "sd3",
    "5-medium": "sd3",
    "medium": "sd3",
    "3-medium": "sd3",
}
"""``ss_base_model_version`` values sd-scripts writes (``library/*_utils.py``); ``chroma``, ``lumina2`` and
``hunyuan-image-2.1`` are deliberately absent: no family here fits them."""

BASE_MODEL_VERSION_PREFIXES: tuple[tuple[str, str], ...] = (
    ("sd_v1", "sd1"),  # sd_v1, sd_v1_v
    ("sd_v2", "sd2"),  # sd_v2, sd_v2_v
    ("sdxl", "sdxl"),  # A1111's rule: startswith("sdxl_")
    ("sd3", "sd3"),
    ("flux2", "flux2"),  # uncertain: not seen in sd-scripts; other trainers may write it
    ("qwen", "qwen-image"),  # uncertain: musubi-tuner style values
    ("anima", "anima"),  # uncertain
)

ARCHITECTURE_PREFIXES: tuple[tuple[str, str], ...] = (
    ("stable-diffusion-v1", "sd1"),
    ("stable-diffusion-v2", "sd2"),
    ("stable-diffusion-xl", "sdxl"),  # base and refiner
    ("stable-diffusion-3", "sd3"),
    ("flux-1", "flux1"),  # flux-1-dev, flux-1-schnell, flux-1
    ("flux-2", "flux2"),  # uncertain spelling
    ("qwen-image", "qwen-image"),  # uncertain spelling
    ("anima", "anima"),  # sd-scripts writes anima-preview
)
"""``modelspec.architecture`` values before the ``/lora`` suffix (sd-scripts ``determine_architecture``)."""


def _by_prefix(value: str, table: Iterable[tuple[str, str]]) -> str | None:
    return next((family for prefix, family in table if value.startswith(prefix)), None)


def _metadata_opinions(metadata: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(family, sentence)`` per metadata key that names a family, most authoritative first."""
    opinions = []
    version = metadata.get("ss_base_model_version")
    if isinstance(version, str) and version:
        family = BASE_MODEL_VERSIONS.get(version) or _by_prefix(version, BASE_MODEL_VERSION_PREFIXES)
        if family:
            opinions.append((family, f"ss_base_model_version = {version!r}: {LABELS[family]}"))
    architecture = metadata.get("modelspec.architecture")
    if isinstance(architecture, str) and architecture:
        family = _by_prefix(architecture.partition("/")[0], ARCHITECTURE_PREFIXES)
        if family:
            opinions.append((family, f"modelspec.architecture = {architecture!r}: {LABELS[family]}"))
    if not opinions and metadata.get("ss_v2") == "True":
        opinions.append(("sd2", "ss_v2 = 'True': SD 2.x"))
    return opinions


def family_from_metadata(metadata: Mapping[str, str]) -> tuple[str | None, list[str]]:
    """The metadata's family and the sentences behind it (the first opinion wins; a conflict is stated)."""
    opinions = _metadata_opinions(metadata)
    if not opinions:
        return None, []
    evidence = [sentence for _, sentence in opinions]
    families = {family for family, _ in opinions}
    if len(families) > 1:
        evidence.append("the metadata keys disagree with each other; the first is used")
    return opinions[0][0], evidence


# --- shapes -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    """One observation: the families it fits, how much it weighs, and the sentence a user reads."""

    families: frozenset[str]
    weight: int
    sentence: str


@dataclass(frozen=True)
class Layer:
    """A module reduced to what family rules look at: component, prefix-less path with underscores, widths."""

    component: str
    path: str
    in_dim: int | None
    out_dim: int | None


@dataclass
class View:
    """All layers of a layout, with lookups the rules share."""

    layers: list[Layer] = field(default_factory=list)
    blocks: dict[str, set[int]] = field(default_factory=dict)
    """Block indices by block kind (``double_blocks``, ``transformer_blocks``, …), from one pass over the paths."""
    _memo: dict[tuple[str, tuple[str, ...] | None], list[Layer]] = field(default_factory=dict)

    def matching(self, pattern: re.Pattern[str], components: Iterable[str] | None = None) -> list[Layer]:
        """Layers whose path matches, optionally only in some components (memoised: rules share patterns)."""
        wanted = tuple(components) if components is not None else None
        memo_key = (pattern.pattern, wanted)
        found = self._memo.get(memo_key)
        if found is None:
            found = self._memo[memo_key] = [
                layer
                for layer in self.layers
                if (wanted is None or layer.component in wanted) and pattern.search(layer.path)
            ]
        return found

    def indices(self, pattern: re.Pattern[str], components: Iterable[str] | None = None) -> set[int]:
        """Block indices captured by ``pattern``'s first group."""
        found = set()
        for layer in self.matching(pattern, components):
            match = pattern.search(layer.path)
            if match:
                found.add(int(match.group(1)))
        return found

    def hidden(self) -> int | None:
        """The denoiser's most common input width: its hidden size for every DiT here."""
        widths = Counter(
            layer.in_dim
            for layer in self.layers
            if layer.component in ("transformer", "unet") and layer.in_dim is not None
        )
        return widths.most_common(1)[0][0] if widths else None


_ALL_PREFIXES = by_length({**ONETRAINER_PREFIXES, **DIFFUSERS_PREFIXES, **COMFY_PREFIXES, **PEFT_PREFIXES})


# Bounded ASCII indices: a key is untrusted text, and int() refuses digit strings over 4300 characters.
BLOCK = re.compile(
    r"^(?:llm_adapter_)?(double_blocks|single_blocks|transformer_blocks|single_transformer_blocks|joint_blocks)_([0-9]{1,6})_"
)


def view_of(layout: Layout) -> View:
    view = View()
    for module in layout.modules:
        rest, _ = strip_prefix(module.name, _ALL_PREFIXES)
        path = flat(rest)
        in_dim, out_dim = io_dims(module)
        view.layers.append(Layer(module.component, path, in_dim, out_dim))
        match = BLOCK.match(path)
        if match:
            view.blocks.setdefault(match.group(1), set()).add(int(match.group(2)))
    return view


def _one(family: str) -> frozenset[str]:
    return frozenset({family})


def _widths(layers: Iterable[Layer]) -> Counter[int]:
    return Counter(layer.in_dim for layer in layers if layer.in_dim is not None)


# SD UNets and their text encoders.

CROSS_ATTENTION = re.compile(r"attn2_(to_[kv]|processor_to_[kv]_lora)$")
CONTEXT_WIDTHS: Mapping[int, tuple[str, str]] = {
    768: ("sd1", "CLIP-L"),
    1024: ("sd2", "OpenCLIP-H"),
    2048: ("sdxl", "CLIP-L + OpenCLIP-G"),
    1280: ("sdxl", "OpenCLIP-G, the SDXL refiner"),
}
UNNAMED_CONTEXTS = (768, 1024, 2048)
"""Context widths that no SD UNet layer has as its own width, so an unnamed layer taking one is cross-attention."""


def sd_context(view: View) -> list[Fact]:
    named = _widths(view.matching(CROSS_ATTENTION, ["unet"]))
    facts = [
        Fact(_one(CONTEXT_WIDTHS[w][0]), 3, f"cross-attention input {w} ({CONTEXT_WIDTHS[w][1]}): {_label(w)}")
        for w in sorted(named)
        if w in CONTEXT_WIDTHS
    ]
    if named:
        return facts
    unnamed = _widths(layer for layer in view.layers if layer.component == "unet")
    return [
        Fact(_one(CONTEXT_WIDTHS[w][0]), 2, f"a UNet layer takes {w}-wide input, the {_label(w)} context width")
        for w in UNNAMED_CONTEXTS
        if w in unnamed
    ]


def _label(width: int) -> str:
    return LABELS[CONTEXT_WIDTHS[width][0]]


CLIP_LAYER = re.compile(r"encoder_layers_\d+_self_attn_(q|k|v|out)_proj$")
QWEN3_LAYER = re.compile(r"layers_\d+_(self_attn_o_proj|mlp_(gate|up)_proj)$")
LAYER_INDEX = re.compile(r"layers_([0-9]{1,6})_")
T5_LAYER = re.compile(r"(SelfAttention_[qkvo]|DenseReluDense_w)")


def _encoder_width(view: View, component: str, pattern: re.Pattern[str]) -> tuple[int | None, int]:
    layers = view.matching(pattern, [component])
    widths = _widths(layers)
    layer_count = len({int(m.group(1)) for layer in layers if (m := LAYER_INDEX.search(layer.path))})
    return (widths.most_common(1)[0][0] if widths else None), layer_count


def _counted(text: str, layers: int) -> str:
    return f"{text}, {layers} layer{'s' if layers > 1 else ''}" if layers else text


def text_encoders(view: View) -> list[Fact]:
    facts = []
    width, layers = _encoder_width(view, "text_encoder", CLIP_LAYER)
    if width == 768:
        facts.append(
            Fact(frozenset({"sd1", "sdxl", "sd3", "flux1"}), 1, _counted("text encoder width 768 (CLIP-L)", layers))
        )
    elif width == 1024:
        facts.append(Fact(_one("sd2"), 2, _counted("text encoder width 1024 (OpenCLIP-H): SD 2.x", layers)))
    width, layers = _encoder_width(view, "text_encoder_2", CLIP_LAYER)
    if width == 1280:
        sentence = _counted("second text encoder width 1280 (OpenCLIP-G)", layers)
        facts.append(Fact(frozenset({"sdxl", "sd3"}), 2, sentence))
    if view.matching(T5_LAYER, ["text_encoder_3"]):
        facts.append(Fact(frozenset({"sd3", "flux1"}), 1, "a T5-XXL text encoder is adapted"))
    width, _ = _encoder_width(view, "text_encoder", QWEN3_LAYER)
    if width == 1024:
        facts.append(Fact(_one("anima"), 1, "Qwen3 text encoder of width 1024 (Qwen3-0.6B): Anima"))
    return facts


UNET_DEPTH = re.compile(r"(?:attentions_\d+|_1)_transformer_blocks_([1-9])_")
FIRST_BLOCK_ATTENTION = re.compile(r"^(down_blocks_0_attentions_|input_blocks_[12]_1_)")


def unet_layout(view: View) -> list[Fact]:
    facts = []
    depth = view.indices(UNET_DEPTH, ["unet"])
    if depth:
        facts.append(
            Fact(_one("sdxl"), 2, f"UNet attention blocks {max(depth) + 1} transformer layers deep: SDXL (up to 10)")
        )
    if view.matching(FIRST_BLOCK_ATTENTION, ["unet"]):
        facts.append(Fact(frozenset({"sd1", "sd2"}), 1, "attention in the first down block: SD 1.x/2.x, not SDXL"))
    return facts


# DiTs.

FLUX2_NAMES = re.compile(
    r"^(double_stream_modulation|single_stream_modulation)|to_qkv_mlp_proj|ff(_context)?_linear_in"
)
FLUX1_MODULATION = re.compile(
    r"_(img_mod_lin|txt_mod_lin|modulation_lin|norm1_linear|norm1_context_linear|norm_linear)$"
)
MLP_IN = re.compile(r"(_img_mlp_0|_txt_mlp_0|_ff_net_0_proj|_ff_context_net_0_proj|_proj_mlp)$")
LINEAR1 = re.compile(r"^single_blocks_\d+_linear1$")
FLUX1_DOUBLE_BLOCKS = 19
FLUX2_MAX_DOUBLE_BLOCKS = 8


def _out_ratio(view: View, pattern: re.Pattern[str], hidden: int) -> float | None:
    outs = Counter(layer.out_dim for layer in view.matching(pattern) if layer.out_dim)
    return outs.most_common(1)[0][0] / hidden if outs else None


FluxCheck = Callable[["View", int | None, set[int]], tuple[str, str] | None]


def _flux_by_names(view: View, hidden: int | None, double: set[int]) -> tuple[str, str] | None:
    if view.matching(FLUX2_NAMES):
        return "flux2", "FLUX.2 names (shared modulation / fused qkv+mlp)"
    if view.matching(FLUX1_MODULATION):
        return "flux1", "per-block modulation layers (FLUX.1)"
    return None


def _flux_by_ratio(view: View, hidden: int | None, double: set[int]) -> tuple[str, str] | None:
    if not hidden:
        return None
    ratios = {_out_ratio(view, MLP_IN, hidden), _out_ratio(view, LINEAR1, hidden)}
    if ratios & {4.0, 7.0}:
        return "flux1", f"MLP ratio 4 (linear1 out {7 * hidden})"
    if ratios & {6.0, 9.0}:
        return "flux2", f"SwiGLU MLP ratio 3 (linear1 out {9 * hidden})"
    return None


def _flux_by_size(view: View, hidden: int | None, double: set[int]) -> tuple[str, str] | None:
    if double and max(double) >= FLUX2_MAX_DOUBLE_BLOCKS:
        return "flux1", f"double block {max(double)} exists (FLUX.2 has at most {FLUX2_MAX_DOUBLE_BLOCKS})"
    if hidden == 6144:
        return "flux2", "hidden 6144 (FLUX.2 dev)"
    return None


FLUX_CHECKS: tuple[FluxCheck, ...] = (_flux_by_names, _flux_by_ratio, _flux_by_size)
"""Names are the surest sign, then MLP ratios, then width and depth."""


def _flux_version(view: View, hidden: int | None, double: set[int]) -> tuple[str, str]:
    for check in FLUX_CHECKS:
        verdict = check(view, hidden, double)
        if verdict is not None:
            return verdict
    return "flux1", f"hidden {hidden} and no FLUX.2 names (FLUX.1 assumed; FLUX.2 klein 4B shares width 3072)"


def flux(view: View) -> list[Fact]:
    double, single = view.blocks.get("double_blocks", set()), view.blocks.get("single_blocks", set())
    d_double = view.blocks.get("transformer_blocks", set())
    d_single = view.blocks.get("single_transformer_blocks", set())
    if not (double or single or d_single):
        return []
    double, single = double or d_double, single or d_single
    hidden = view.hidden()
    family, reason = _flux_version(view, hidden, double)
    shape = f"{len(double)} double blocks, {len(single)} single blocks, hidden {hidden}"
    return [Fact(_one(family), 3, f"{shape}; {reason}: {LABELS[family]}")]


DOUBLE_STREAM = re.compile(r"^transformer_blocks_\d+_(attn_add_[qkv]_proj|ff_context_|norm1_context_)")
QWEN_NAMES = re.compile(r"^transformer_blocks_\d+_(img_mlp|txt_mlp|img_mod|txt_mod)_")
SD3_HIDDEN: Mapping[int, str] = {1536: "SD3/3.5 Medium", 2432: "SD3.5 Large"}


def mmdit(view: View) -> list[Fact]:
    """SD3 and Qwen-Image, and the diffusers double-stream blocks FLUX shares with them."""
    hidden = view.hidden()
    joint = view.blocks.get("joint_blocks")
    if joint:
        return [Fact(_one("sd3"), 3, f"{len(joint)} MMDiT joint blocks, hidden {hidden}: SD3")]
    if view.matching(QWEN_NAMES):
        return [Fact(_one("qwen-image"), 3, "Qwen-Image double-stream block names (img_mlp, txt_mlp, img_mod)")]
    blocks = view.blocks.get("transformer_blocks")
    others = view.blocks.keys() & {"single_transformer_blocks", "double_blocks"}
    if not blocks or others or hidden is None:
        return []
    return _double_stream_only(view, blocks, hidden)


def _double_stream_only(view: View, blocks: set[int], hidden: int) -> list[Fact]:
    """diffusers ``transformer_blocks`` without single blocks: SD3 by width, else FLUX.1 or Qwen-Image by depth."""
    if hidden in SD3_HIDDEN and view.matching(DOUBLE_STREAM):
        return [Fact(_one("sd3"), 3, f"{len(blocks)} double-stream blocks at hidden {hidden} ({SD3_HIDDEN[hidden]})")]
    if hidden != 3072:
        return []
    if max(blocks) >= FLUX1_DOUBLE_BLOCKS:
        sentence = f"transformer block {max(blocks)} at hidden 3072: beyond FLUX.1's 19, Qwen-Image has 60"
        return [Fact(_one("qwen-image"), 2, sentence)]
    return [Fact(frozenset({"flux1", "qwen-image"}), 1, "transformer blocks at hidden 3072: FLUX.1 or Qwen-Image")]


COSMOS = re.compile(
    r"^(llm_adapter_)?blocks_\d+_((self|cross)_attn_(q|k|v|output)_proj|mlp_layer[12]|adaln_modulation_)"
)
KREA2 = re.compile(r"^(txtfusion_|tproj_|tmlp_|txtmlp_|last_linear$|first$|blocks_\d+_attn_(wq|wk|wv|wo|gate)$)")


def other_dits(view: View) -> list[Fact]:
    facts = []
    hidden = view.hidden()
    if view.matching(COSMOS):
        facts.append(
            Fact(_one("anima"), 3, f"Cosmos-Predict2 DiT names (self_attn.q_proj, mlp.layer1), hidden {hidden}: Anima")
        )
    if view.matching(KREA2):
        facts.append(Fact(_one("krea2"), 3, f"Krea-2 names (blocks.N.attn.wq, txtfusion, tproj), hidden {hidden}"))
    return facts


RULES: tuple[Callable[[View], list[Fact]], ...] = (sd_context, text_encoders, unet_layout, flux, mmdit, other_dits)


def family_from_shapes(layout: Layout) -> tuple[str, list[str]]:
    """The family the facts weigh most for (``unknown`` on a tie or no facts), with supporting evidence first."""
    view = view_of(layout)
    facts = [fact for rule in RULES for fact in rule(view)]
    scores: Counter[str] = Counter()
    for fact in facts:
        for family in fact.families:
            scores[family] += fact.weight
    ranked = scores.most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return "unknown", [fact.sentence for fact in facts]
    winner = ranked[0][0]
    evidence = [fact.sentence for fact in facts if winner in fact.families]
    evidence += [f"against: {fact.sentence}" for fact in facts if winner not in fact.families]
    return winner, evidence


def detect_family(layout: Layout, metadata: Mapping[str, str]) -> FamilyVerdict:
    """Shapes first, metadata second; a disagreement is kept as a sentence, never silently resolved."""
    family, evidence = family_from_shapes(layout)
    metadata_family, metadata_evidence = family_from_metadata(metadata)
    disagreement = None
    if family == "unknown" and metadata_family is not None:
        family = metadata_family
        evidence = [*evidence, f"the tensors do not decide the family; taken from metadata: {metadata_evidence[0]}"]
    elif metadata_family is not None and metadata_family != family:
        disagreement = (
            f"the tensors say {LABELS[family]} ({evidence[0]}) but the metadata says {LABELS[metadata_family]} "
            f"({metadata_evidence[0]}); the tensors are trusted"
        )
    return FamilyVerdict(family, evidence, metadata_family, metadata_evidence, disagreement)
