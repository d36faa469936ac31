"""LyCORIS (KohakuBlueleaf/LyCORIS): kohya names or ``lycoris_…``, with LoHa, LoKr, full, OFT/BOFT, GLoRA, IA3,
Tucker or DoRA tensors.

The id is ``lycoris`` when any module needs LyCORIS to be read, or when ``ss_network_module`` names
``lycoris.kohya``; a LyCORIS file of plain LoRA/LoCon modules without that metadata is indistinguishable from
kohya's and is reported as ``kohya``. Loaders detect the algorithm per module anyway (one file may mix them), so
the notes list the kinds found rather than trusting ``ss_network_args``.
"""

from __future__ import annotations

import json
from collections import Counter

from lorahub.formats import kohya
from lorahub.formats.grouping import Grouped, Keys, Metadata, SchemeFormat, meta_text
from lorahub.formats.layers import layer_kind


def _detect(keys: Keys, metadata: Metadata) -> bool:
    return kohya.is_kohya_named(keys) and kohya.uses_lycoris(keys, metadata)


def _declared_algo(metadata: Metadata) -> str | None:
    try:
        args = json.loads(meta_text(metadata, "ss_network_args"))
    except (ValueError, RecursionError):
        return None
    algo = args.get("algo") if isinstance(args, dict) else None
    return algo if isinstance(algo, str) else None


def _notes(grouped: Grouped, metadata: Metadata) -> list[str]:
    notes = kohya.trainer_notes(grouped, metadata)
    kinds = Counter(layer_kind(module) for module in grouped.modules.values())
    if kinds:
        notes.append("layer kinds: " + ", ".join(f"{kind} ×{count}" for kind, count in sorted(kinds.items())))
    algo = _declared_algo(metadata)
    if algo is not None:
        notes.append(f"ss_network_args declares algo {algo!r}")
    return notes


FORMAT = SchemeFormat(
    id="lycoris",
    description="LyCORIS (LoHa, LoKr, full, OFT/BOFT, GLoRA, IA3, Tucker, DoRA) under kohya or lycoris_ names",
    scheme=kohya.SCHEME,
    detector=_detect,
    notes=_notes,
)
