"""kohya-ss/sd-scripts LoRA/LoCon: ``lora_unet_…``/``lora_te[123]_…`` modules with ``lora_down``/``lora_up``/``alpha``.

kohya and LyCORIS share one naming (LyCORIS runs inside sd-scripts), so both formats parse with the scheme here;
what separates them is whether any module uses an algorithm sd-scripts' own ``networks.lora`` cannot write (see
:func:`uses_lycoris`). Embedded A1111 textual-inversion bundles (``bundle_emb.*``) are read as embeddings.
"""

from __future__ import annotations

from lorahub.formats.grouping import Grouped, Keys, Metadata, Scheme, SchemeFormat, meta_text, mostly
from lorahub.formats.naming import EMBEDDING_PREFIX, KOHYA_ALL_SUFFIXES, KOHYA_PREFIXES, LYCORIS_ONLY_ROLES

SCHEME = Scheme(prefixes=KOHYA_PREFIXES, suffixes=KOHYA_ALL_SUFFIXES, embeddings=True)

KOHYA_OFT_PREFIX = "oft_unet_"
"""sd-scripts' own OFT (``networks.oft``): OFT tensors, but kohya's, with a different alpha meaning."""

_KEY_PREFIXES = (*KOHYA_PREFIXES, EMBEDDING_PREFIX)
_LYCORIS_ENDINGS = tuple(
    f".{suffix}" for suffix, role in KOHYA_ALL_SUFFIXES.items() if role in LYCORIS_ONLY_ROLES and suffix != "weight"
)
"""Key endings only LyCORIS writes. IA3's bare ``.weight`` is left out (any stray key ends so); its ``on_input``
companion is in."""


def is_kohya_named(keys: Keys) -> bool:
    """Most keys carry a kohya prefix (or are bundled embeddings)."""
    return mostly(keys, lambda key: key.startswith(_KEY_PREFIXES))


def uses_lycoris(keys: Keys, metadata: Metadata) -> bool:
    """LyCORIS said so in ``ss_network_module``, used its own ``lycoris_`` prefix, or wrote a tensor sd-scripts'
    ``networks.lora`` never writes (LoHa, LoKr, full, OFT, GLoRA, IA3, Tucker ``lora_mid``, DoRA)."""
    if meta_text(metadata, "ss_network_module").startswith("lycoris"):
        return True
    for key in keys:
        if key.startswith("lycoris_"):
            return True
        if key.endswith(_LYCORIS_ENDINGS) and not key.startswith(KOHYA_OFT_PREFIX):
            return True
    return False


def trainer_notes(grouped: Grouped, metadata: Metadata) -> list[str]:
    """Facts about the writer that change how tensors are read later."""
    notes = []
    module = meta_text(metadata, "ss_network_module")
    if module:
        notes.append(f"written by sd-scripts network module {module!r}")
    if any(name.startswith(KOHYA_OFT_PREFIX) for name in grouped.modules):
        notes.append("kohya OFT (networks.oft): alpha is a norm constraint multiplied by out_dim, not a scale")
    return notes


def _detect(keys: Keys, metadata: Metadata) -> bool:
    return is_kohya_named(keys) and not uses_lycoris(keys, metadata)


FORMAT = SchemeFormat(
    id="kohya",
    description="kohya-ss/sd-scripts LoRA/LoCon (lora_unet_/lora_te*_ names, lora_down/lora_up/alpha)",
    scheme=SCHEME,
    detector=_detect,
    notes=trainer_notes,
)
