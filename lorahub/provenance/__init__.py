"""C2PA Content Credentials: the home's certificate authority, signing generated images, reading them back.

Importing this package is cheap: the C2PA library (a native extension) loads on the first sign or read.
"""

from __future__ import annotations

from lorahub.provenance.ca import (
    DEFAULT_LEAF_DAYS,
    CertificateInfo,
    LocalCA,
    ProvenanceSettings,
)
from lorahub.provenance.read import AdapterFacts, AdapterReport, ImageReport, ReadContext, inspect_image
from lorahub.provenance.sign import (
    DEFAULT_TRAINING_MINING,
    GENERATION_LABEL,
    TRAINED_ALGORITHMIC_MEDIA,
    AdapterUse,
    BaseRef,
    C2paCredentials,
    CredentialSource,
    GenerationParameters,
    SignedImage,
    TrainingMiningEntry,
    build_manifest,
    sign_image,
)

__all__ = [
    "DEFAULT_LEAF_DAYS",
    "DEFAULT_TRAINING_MINING",
    "GENERATION_LABEL",
    "TRAINED_ALGORITHMIC_MEDIA",
    "AdapterFacts",
    "AdapterReport",
    "AdapterUse",
    "BaseRef",
    "C2paCredentials",
    "CertificateInfo",
    "CredentialSource",
    "GenerationParameters",
    "ImageReport",
    "LocalCA",
    "ProvenanceSettings",
    "ReadContext",
    "SignedImage",
    "TrainingMiningEntry",
    "build_manifest",
    "inspect_image",
    "sign_image",
]
