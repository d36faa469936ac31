"""OneTrainer: kohya-style flattened names with its own ``lora_transformer_`` prefix (SD3/FLUX diffusers module
paths), T5 as ``lora_te2_`` in FLUX files, DoRA as ``dora_scale``; newer versions also write BFL names under
``transformer.`` with kohya suffixes and split QKV (``transformer.double_blocks.0.img_attn.qkv.0.lora_down.weight``).

OneTrainer's SD 1.x/SDXL files use plain kohya names and are reported as ``kohya`` (nothing tells them apart).
"""

from __future__ import annotations

from lorahub.formats.grouping import Keys, Metadata, Scheme, SchemeFormat, mostly
from lorahub.formats.naming import EMBEDDING_PREFIX, KOHYA_ALL_SUFFIXES, ONETRAINER_PREFIXES

SCHEME = Scheme(prefixes=ONETRAINER_PREFIXES, suffixes=KOHYA_ALL_SUFFIXES, embeddings=True)
_KEY_PREFIXES = (*ONETRAINER_PREFIXES, EMBEDDING_PREFIX)
_OWN_PREFIX = "lora_transformer_"
_BFL_BLOCKS = ("transformer.double_blocks.", "transformer.single_blocks.")
_KOHYA_SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".alpha")


def _own_key(key: str) -> bool:
    return key.startswith(_OWN_PREFIX) or (key.startswith(_BFL_BLOCKS) and key.endswith(_KOHYA_SUFFIXES))


def _detect(keys: Keys, metadata: Metadata) -> bool:
    return any(_own_key(key) for key in keys) and mostly(keys, lambda key: key.startswith(_KEY_PREFIXES))


FORMAT = SchemeFormat(
    id="onetrainer",
    description="OneTrainer (lora_transformer_ names, or BFL names under transformer. with lora_down/lora_up)",
    scheme=SCHEME,
    detector=_detect,
)
