"""Cards for the signing tests: a full one (every field filled) and a minimal one."""

from __future__ import annotations

import copy
from typing import Any

from lorahub.signing import BaseModel, Card, Consent, Creator, Identity, License, Parent

DIGEST_A = "a" * 64
DIGEST_B = "b" * 64
DIGEST_C = "c" * 64
CREATED = "2025-03-01T12:00:00Z"


def minimal_card(creator: Identity, content_digest: str = DIGEST_A) -> Card:
    return Card(
        name="pixel-art",
        version=1,
        content_digest=content_digest,
        format="kohya",
        base_model=BaseModel("sd1"),
        license=License("NOASSERTION"),
        creator=Creator(creator.fingerprint, creator.user_id),
        created=CREATED,
    )


def full_card(creator: Identity, content_digest: str = DIGEST_A) -> Card:
    return Card(
        name="pixel-art",
        version=2,
        content_digest=content_digest,
        hashes={"sha256": DIGEST_B, "autov1": None, "autov2": DIGEST_B[:10], "autov3": DIGEST_C, "crc32": "0d4a1185"},
        format="kohya",
        layer_kinds=["lora", "dora"],
        base_model=BaseModel("sdxl", "stabilityai/stable-diffusion-xl-base-1.0", DIGEST_C),
        license=License(
            "CreativeML-OpenRAIL-M",
            credit_required=True,
            commercial_use=["image", "rent"],
            derivatives_allowed=True,
            different_license_allowed=False,
        ),
        trigger_words=["pxl style", "8-bit"],
        description="signed description: crisp pixel art, Größe 64 px 😀\nsecond line",
        tags=["style", "pixel art"],
        consent=Consent(
            status="licensed",
            record={"items": 40, "licenses": ["CC-BY-4.0"], "opt_out_checks": {"spawning": False}, "note": None},
            manifest_digest=DIGEST_B,
        ),
        lineage=[
            Parent(DIGEST_B, "merged-from", {"weight": "0.7"}),
            Parent(DIGEST_C, "merged-from", {"weight": "0.3", "rank": 16}),
        ],
        creator=Creator(creator.fingerprint, creator.user_id),
        created=CREATED,
    )


def card_dict(card: Card) -> dict[str, Any]:
    """A deep, independent copy of the card's dict, for tests that damage it."""
    return copy.deepcopy(card.to_dict())
