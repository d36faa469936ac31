"""cloneofsimo/lora ``lora_diffusion`` (2022-23): modules by *index* (``unet:{i}:down``, ``text_encoder:{i}:up``), not
by name, plus optional textual-inversion vectors stored under their token (``<s1>``) and flagged ``<embed>`` in the
metadata.

Module names are therefore ``unet:{i}``; mapping an index to a layer needs the target classes recorded in the
metadata (``unet`` = ``["CrossAttention", "Attention", "GEGLU"]``) and the base model's module order.
"""

from __future__ import annotations

import re

from lorahub.formats.base import Layout, Module
from lorahub.formats.grouping import Grouped, Keys, Metadata, meta_text, token_embedding

_KEY = re.compile(r"(?P<model>[A-Za-z_]\w*):(?P<index>[0-9]{1,9}):(?P<role>up|down)")
COMPONENT_OF_MODEL = {"unet": "unet", "text_encoder": "text_encoder"}
EMBED_FLAG = "<embed>"


def _is_token(key: str, metadata: Metadata) -> bool:
    return meta_text(metadata, key) == EMBED_FLAG or (len(key) > 2 and key.startswith("<") and key.endswith(">"))


class CloneofsimoFormat:
    """Index-named modules and token embeddings."""

    id = "cloneofsimo"
    description = "cloneofsimo/lora lora_diffusion (unet:{i}:down/up, text_encoder:{i}:down/up, <s1> embeddings)"

    def detect(self, keys: Keys, metadata: Metadata) -> bool:
        return any(":" in key and _KEY.fullmatch(key) for key in keys)

    def parse(self, keys: Keys, metadata: Metadata) -> Layout:
        grouped = Grouped()
        for key, info in keys.items():
            match = _KEY.fullmatch(key)
            if match is not None:
                model = match["model"]
                where = (f"{model}:{match['index']}", COMPONENT_OF_MODEL.get(model, "unknown"), match["role"])
                grouped.add(key, info, where)
            elif _is_token(key, metadata):
                grouped.embeddings.append(token_embedding(key, key, info))
            else:
                grouped.unmatched.append(key)
        layout = grouped.layout(self.id, ["modules are numbered, not named; cloneofsimo files carry no alpha"])
        layout.modules.sort(key=_module_order)
        return layout


def _module_order(module: Module) -> tuple[str, int]:
    model, _, index = module.name.partition(":")
    return model, int(index) if index.isascii() and index.isdigit() else -1


FORMAT = CloneofsimoFormat()
