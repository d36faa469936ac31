"""The files other tools read beside an adapter, made from its signed card: pure functions, no I/O.

* A1111 / Forge ``NAME.json`` ("user metadata" of an extra network): the keys are the ones the web UI's editor
  saves (``extensions-builtin/Lora/ui_edit_user_metadata.py``): ``description``, ``sd version`` (one of ``SD1``,
  ``SD2``, ``SDXL``, ``SD3``, ``Unknown``), ``activation text`` (added to the prompt with the LoRA),
  ``preferred weight`` (0 means "use the default multiplier") and ``notes``. ``negative text`` is left out: a card
  has none.
* Civitai Helper ``NAME.civitai.info``: the shape of Civitai's model-version API answer, which Civitai Helper writes
  and ComfyUI-Lora-Manager reads back (``model.name``, the ``primary`` file's ``hashes.SHA256`` and ``sizeKB``,
  ``trainedWords``, ``baseModel``). Civitai ids (``id``, ``modelId``) are never invented: a file that did not come
  from Civitai has none, and Civitai Helper treats an info without ``id`` as "not linked", which is the truth.
* Hugging Face ``README.md``: YAML front matter (``base_model``, ``base_model_relation: adapter``, ``license`` or
  ``license: other`` + ``license_name``/``license_link``, ``instance_prompt``, ``tags``, ``library_name``) and a body
  with trigger words, a diffusers usage snippet, lineage and the lorahub card digest.

Every value here is a fact from the card or the written file, or a documented table below; unknowns are omitted.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lorahub import errors
from lorahub.files.neighbours import SIDECAR_SUFFIX

if TYPE_CHECKING:
    from lorahub.files.digests import Hashes
    from lorahub.signing.card import Card
    from lorahub.signing.signed import SignedCard

# --- tables ------------------------------------------------------------------------------------------------------

A1111_SD_VERSIONS: Mapping[str, str] = {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL", "sd3": "SD3"}
"""lorahub family → A1111 ``network.SdVersion`` name; anything else is ``Unknown``."""

CIVITAI_BASE_MODELS: tuple[tuple[str, str | None, str], ...] = (
    ("sd1", "1-4", "SD 1.4"),
    ("sd1", "1.4", "SD 1.4"),
    ("sd1", None, "SD 1.5"),
    ("sd2", "2-0", "SD 2.0"),
    ("sd2", "2.0", "SD 2.0"),
    ("sd2", None, "SD 2.1"),
    ("sdxl", None, "SDXL 1.0"),
    ("sd3", "3.5", "SD 3.5"),
    ("sd3", "3-5", "SD 3.5"),
    ("sd3", None, "SD 3"),
    ("flux1", "schnell", "Flux.1 S"),
    ("flux1", "dev", "Flux.1 D"),
)
"""(family, text in the card's base-model name or None for any, Civitai ``baseModel``), first match wins. A FLUX.1
adapter whose card does not say dev or schnell gets no ``baseModel``: the two are different Civitai categories."""

CIVITAI_FP: Mapping[str, str] = {"F16": "fp16", "BF16": "bf16", "F32": "fp32"}
CIVITAI_LORA_KINDS = frozenset({"lora", "locon", "lora-tucker"})
"""Layer kinds Civitai files as ``LORA``; DoRA is ``DoRA``; other LyCORIS kinds are ``LoCon`` (Civitai's type for
all of LyCORIS)."""

HF_BASE_MODELS: Mapping[str, str] = {
    "sd1": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd2": "stabilityai/stable-diffusion-2-1",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
}
"""The reference Hub checkpoint of a family, used when the card names no Hub repository. Families whose checkpoints
differ in ways an adapter cares about (SD3 Medium vs 3.5, FLUX.1 dev vs schnell) have none: the card must say."""

HF_FAMILY_TAGS: Mapping[str, tuple[str, ...]] = {
    "sd1": ("stable-diffusion", "stable-diffusion-diffusers"),
    "sd2": ("stable-diffusion", "stable-diffusion-diffusers"),
    "sdxl": ("stable-diffusion-xl", "stable-diffusion-xl-diffusers"),
    "sd3": ("sd3", "sd3-diffusers"),
    "flux1": ("flux", "flux-diffusers"),
}
HF_TAGS = ("text-to-image", "diffusers", "lora", "template:sd-lora")
"""The tags diffusers' LoRA training scripts write (``save_model_card``)."""

HF_LICENSE_IDS = frozenset(
    {
        "apache-2.0",
        "mit",
        "cc0-1.0",
        "cc-by-4.0",
        "cc-by-sa-4.0",
        "cc-by-nc-4.0",
        "cc-by-nc-sa-4.0",
        "cc-by-nc-nd-4.0",
        "creativeml-openrail-m",
        "openrail++",
        "openrail",
        "bigscience-openrail-m",
        "openmdw-1.0",
        "openmdw-1.1",
        "unknown",
    }
)
"""Licence ids the Hub accepts in ``license:`` (hub-docs ``repositories-licenses.md``) that image adapters use;
any other licence is ``license: other`` with ``license_name`` (and ``license_link`` when the catalogue has a URL)."""

HF_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
SLUG = re.compile(r"^[a-z0-9][a-z0-9.+_-]*$")


# --- A1111 ---------------------------------------------------------------------------------------------------------


def a1111_user_metadata(card: Card, *, weight: float | None, notes: str) -> dict[str, Any]:
    """The A1111 extra-network user metadata. ``preferred weight`` only when one was given: the card has none, and
    A1111 reads a missing one as "the default multiplier"."""
    data: dict[str, Any] = {
        "description": card.description,
        "sd version": A1111_SD_VERSIONS.get(card.base_model.family, "Unknown"),
        "activation text": ", ".join(card.trigger_words),
    }
    if weight is not None:
        data["preferred weight"] = weight
    data["notes"] = notes
    return data


# --- Civitai Helper ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrittenFile:
    """Facts about the adapter file as written (after the card was embedded): what the sidecars describe."""

    name: str
    size: int
    hashes: Hashes
    dtypes: Sequence[str]


def civitai_base_model(card: Card) -> str | None:
    name = (card.base_model.name or "").lower()
    for family, text, label in CIVITAI_BASE_MODELS:
        if family == card.base_model.family and (text is None or text in name):
            return label
    return None


def civitai_type(layer_kinds: Sequence[str]) -> str:
    kinds = set(layer_kinds)
    if "dora" in kinds:
        return "DoRA"
    return "LORA" if kinds <= CIVITAI_LORA_KINDS else "LoCon"


def _precision(dtypes: Sequence[str]) -> str | None:
    """The file's precision as Civitai labels it, when its factors share one dtype (alphas are scalars, ignored)."""
    found = {CIVITAI_FP.get(d) for d in dtypes}
    return found.pop() if len(found) == 1 else None


def civitai_info(card: Card, written: WrittenFile) -> dict[str, Any]:
    """A Civitai model-version record for a file that Civitai never saw: names, words, base and this file's hashes
    (Civitai's spelling: upper-case hex, AutoV3 shortened to 12 digits)."""
    hashes = written.hashes
    file_hashes = {
        "AutoV1": hashes.autov1,
        "AutoV2": hashes.autov2,
        "AutoV3": hashes.autov3[:12] if hashes.autov3 else None,
        "SHA256": hashes.sha256,
        "CRC32": hashes.crc32,
        "BLAKE3": hashes.blake3,
    }
    metadata: dict[str, Any] = {"format": "SafeTensor"}
    precision = _precision(written.dtypes)
    if precision:
        metadata["fp"] = precision
    model: dict[str, Any] = {"name": card.name, "type": civitai_type(card.layer_kinds), "tags": list(card.tags)}
    info: dict[str, Any] = {
        "name": f"v{card.version}",
        "description": card.description,
        "trainedWords": list(card.trigger_words),
        "model": model,
        "files": [
            {
                "name": written.name,
                "type": "Model",
                "primary": True,
                "sizeKB": written.size / 1024,
                "metadata": metadata,
                "hashes": {k: v.upper() for k, v in file_hashes.items() if v},
            }
        ],
    }
    base = civitai_base_model(card)
    if base is not None:
        info["baseModel"] = base
    return info


# --- Hugging Face --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HfLicense:
    license: str
    name: str | None = None
    link: str | None = None


def hf_license(license_id: str) -> HfLicense:
    """The card's licence as the Hub spells it: a Hub id when the licence (or one of its catalogue aliases) is one,
    else ``other`` with a slug name and, from the catalogue, a link."""
    from lorahub.licenses import get_license

    try:
        entry = get_license(license_id)
    except errors.UnknownLicenseError:
        names, url = [license_id], None
    else:
        names, url = [entry.id, *entry.aliases], entry.url
    for candidate in names:
        if candidate.lower() in HF_LICENSE_IDS:
            return HfLicense(candidate.lower())
    if license_id.lower() in ("noassertion", "other"):
        return HfLicense("unknown")
    slugs = [n for n in names if SLUG.fullmatch(n)]
    name = slugs[0] if slugs else _slug(license_id.removeprefix("LicenseRef-"))
    return HfLicense("other", name, url)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.+-]+", "-", text.lower()).strip("-") or "custom"


def hf_base_model(card: Card) -> tuple[str | None, bool]:
    """(Hub repo id, whether it is the family's reference checkpoint rather than the card's own word)."""
    name = card.base_model.name
    if name and HF_REPO_ID.fullmatch(name):
        return name, False
    default = HF_BASE_MODELS.get(card.base_model.family)
    return default, default is not None


def hf_front_matter(card: Card) -> dict[str, str | list[str]]:
    base, _ = hf_base_model(card)
    licence = hf_license(card.license.id)
    front: dict[str, str | list[str]] = {}
    if base:
        front["base_model"] = base
        front["base_model_relation"] = "adapter"
    front["license"] = licence.license
    if licence.name:
        front["license_name"] = licence.name
    if licence.link:
        front["license_link"] = licence.link
    if card.trigger_words:
        front["instance_prompt"] = ", ".join(card.trigger_words)
    tags = [*HF_TAGS, *HF_FAMILY_TAGS.get(card.base_model.family, ()), *card.tags]
    front["tags"] = list(dict.fromkeys(tags))
    front["library_name"] = "diffusers"
    front["pipeline_tag"] = "text-to-image"
    return front


def yaml_front_matter(fields: Mapping[str, str | list[str]]) -> str:
    """YAML written by hand, every scalar double-quoted as JSON (a JSON string is a valid YAML double-quoted
    scalar), so no value can turn into a number, a boolean or a second key."""
    lines = ["---"]
    for key, value in fields.items():
        if isinstance(value, str):
            lines.append(f"{key}: {json.dumps(value, ensure_ascii=False)}")
        else:
            lines.append(f"{key}:")
            lines.extend(f"- {json.dumps(item, ensure_ascii=False)}" for item in value)
    lines.append("---")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class LineageEntry:
    relation: str
    digest: str
    parameters: Mapping[str, Any]
    ref: str | None
    """``name@version`` in the exporting home, when it is catalogued there."""


def _code(text: str) -> str:
    """A Markdown code span that holds any text (a longer backtick fence than the text contains)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _adapter_name(name: str) -> str:
    """A PEFT adapter name (a ``ModuleDict`` key: no dots)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _usage(card: Card, *, folder: str, file_name: str, base: str | None, weight: float | None) -> list[str]:
    prompt = ", ".join(card.trigger_words) or "a photo"
    adapter = _adapter_name(card.name)
    lines = [
        "```python",
        "import torch",
        "from diffusers import AutoPipelineForText2Image",
        "",
        f"pipe = AutoPipelineForText2Image.from_pretrained({json.dumps(base or 'BASE-MODEL')}, "
        'torch_dtype=torch.float16).to("cuda")',
        f"pipe.load_lora_weights({json.dumps(folder)}, weight_name={json.dumps(file_name)}, "
        f"adapter_name={json.dumps(adapter)})  # this folder, or its Hub repo id",
    ]
    if weight is not None:
        lines.append(f"pipe.set_adapters([{json.dumps(adapter)}], adapter_weights=[{weight!r}])")
    lines += [f"image = pipe({json.dumps(prompt, ensure_ascii=False)}).images[0]", "```"]
    return lines


def _lineage(entries: Sequence[LineageEntry]) -> list[str]:
    if not entries:
        return ["This adapter has no recorded parents."]
    lines = ["| relation | parent | content digest | parameters |", "|---|---|---|---|"]
    for entry in entries:
        params = ", ".join(f"{k}={v}" for k, v in entry.parameters.items() if v is not None) or "-"
        parent = _code(entry.ref) if entry.ref else "(not in the exporting catalogue)"
        lines.append(f"| {entry.relation} | {parent} | `{entry.digest}` | {params.replace('|', '/')} |")
    return lines


def hf_readme(
    signed: SignedCard,
    *,
    file_name: str,
    folder: str,
    lineage: Sequence[LineageEntry],
    weight: float | None = None,
) -> str:
    """The model card: front matter, then what a user needs to use the adapter and to check where it came from."""
    card = signed.card
    base, is_default = hf_base_model(card)
    licence = hf_license(card.license.id)
    body = [f"# {card.name} (version {card.version})", ""]
    if card.description:
        body += [card.description, ""]
    body += [
        f"A LoRA adapter for {base or card.base_model.family} in diffusers format (`{file_name}`), exported by "
        "lorahub from its catalogue with its signed card.",
        "",
    ]
    if base and is_default:
        body += [f"The card names no base checkpoint; `{base}` is the reference model of its family.", ""]
    body += ["## Trigger words", ""]
    if card.trigger_words:
        body += ["Use these in the prompt:", "", *(f"- {_code(word)}" for word in card.trigger_words), ""]
    else:
        body += ["None recorded.", ""]
    body += ["## Use with diffusers", ""]
    body += _usage(card, folder=folder, file_name=file_name, base=base, weight=weight)
    licence_text = card.license.id + (f" ({licence.link})" if licence.link else "")
    body += ["", "## Licence", "", f"{licence_text}.", ""]
    body += ["## Lineage", "", *_lineage(lineage), ""]
    signers = ", ".join(f"`{s.keyid}`" for s in signed.envelope.signatures) or "none (unsigned)"
    body += [
        "## Provenance (lorahub)",
        "",
        f"- content digest (SHA-256 over tensor names, dtypes, shapes and bytes): `{card.content_digest}`",
        f"- card digest (SHA-256 of the signed card payload): `{hashlib.sha256(signed.envelope.payload).hexdigest()}`",
        f"- signed by (key fingerprints): {signers}",
        f"- the signed card is embedded in the file's header and in `{file_name}{SIDECAR_SUFFIX}`; check both with "
        f"`lorahub verify {file_name}`",
        "",
    ]
    return yaml_front_matter(hf_front_matter(card)) + "\n" + "\n".join(body)
