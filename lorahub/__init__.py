"""lorahub: a local registry and SDK for LoRA-family adapters of image diffusion models.

The package root is the SDK: open a home with :meth:`Hub.open` and call its methods, or use the root functions
(:func:`load`, :func:`stack`, :func:`apply_prompt`, :func:`train`, :func:`inspect`). Importing it is cheap:
submodules (and torch, where needed) load on first use.

Stability: the public API is exactly the names in ``lorahub.__all__`` (the root functions, :class:`Hub`, and the
option and result types their signatures name) plus the :mod:`lorahub.errors` module. Everything else, including
the subpackages (``lorahub.sdk``, ``lorahub.adapters``, ``lorahub.registry``, ``lorahub.cli``, …) and any name
starting with an underscore, is internal and may change in any release; import types from ``lorahub``, not from
the module that happens to define them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lorahub.errors import LorahubError
from lorahub.version import __version__

# When torchao is installed (the ``quantize`` extra), peft and diffusers import it on every load, and it logs a
# warning for each optional CUDA kernel it cannot load, torch one deprecation about torchao's enums, and diffusers
# one about torchao-serialised checkpoints (which lorahub never loads): lines on every command that a lorahub user
# cannot act on. Those three loggers alone are raised to errors.
for _noisy in ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)

__all__ = [
    "AdapterFacts",
    "AdapterHandle",
    "AdapterUse",
    "AdapterVersion",
    "AddOptions",
    "AddResult",
    "AppliedPrompt",
    "BackupResult",
    "BakeResult",
    "BaseRef",
    "BatchResult",
    "C2paCredentials",
    "CertificateInfo",
    "CertificateView",
    "Child",
    "ChildIndex",
    "ConvertResult",
    "ExportResult",
    "Filters",
    "GenerateResult",
    "Hub",
    "Identity",
    "IdentityView",
    "ImageReport",
    "KeyRecord",
    "LibraryEntry",
    "LineageNode",
    "LocalCA",
    "LorahubError",
    "MergeResult",
    "OmsSignature",
    "Page",
    "Policy",
    "ProvenanceSettings",
    "PullResult",
    "PushResult",
    "Report",
    "RestoreResult",
    "RoleRow",
    "ScanResult",
    "SignedCard",
    "SignedImage",
    "Signer",
    "StaticTrust",
    "Step",
    "TeamPushReport",
    "TeamStatus",
    "TrainConfig",
    "TrainResult",
    "TrainingMiningEntry",
    "TrustLookup",
    "Unset",
    "Verdict",
    "VerifiedAdapter",
    "VerifyReport",
    "__version__",
    "apply_prompt",
    "errors",
    "inspect",
    "load",
    "stack",
    "train",
]

if TYPE_CHECKING:
    from lorahub import errors
    from lorahub.licenses.engine import Verdict
    from lorahub.provenance.ca import CertificateInfo, LocalCA, ProvenanceSettings
    from lorahub.provenance.read import AdapterFacts, ImageReport
    from lorahub.provenance.sign import AdapterUse, BaseRef, C2paCredentials, SignedImage, TrainingMiningEntry
    from lorahub.registry.catalog import AdapterVersion, Filters, RoleRow
    from lorahub.sdk.adding import AddOptions, AddResult
    from lorahub.sdk.backup import BackupResult, RestoreResult
    from lorahub.sdk.baking import BakeResult
    from lorahub.sdk.batch import BatchResult
    from lorahub.sdk.browsing import Page
    from lorahub.sdk.distribution import PullResult, PushResult
    from lorahub.sdk.entry import apply_prompt, load, stack
    from lorahub.sdk.exporting import ConvertResult, ExportResult
    from lorahub.sdk.generating import GenerateResult
    from lorahub.sdk.hub import Hub, IdentityView
    from lorahub.sdk.inspect import Report, inspect
    from lorahub.sdk.library import ScanResult
    from lorahub.sdk.lineage import Child, ChildIndex, LineageNode
    from lorahub.sdk.locating import LibraryEntry
    from lorahub.sdk.merging import MergeResult
    from lorahub.sdk.oms import OmsSignature
    from lorahub.sdk.pipelines import AdapterHandle
    from lorahub.sdk.policy import Policy
    from lorahub.sdk.prompts import AppliedPrompt
    from lorahub.sdk.provenance import CertificateView
    from lorahub.sdk.team import TeamPushReport, TeamStatus
    from lorahub.sdk.training import TrainResult, train
    from lorahub.sdk.verified import VerifiedAdapter
    from lorahub.sdk.verifying import VerifyReport
    from lorahub.signing.keys import Identity, Signer
    from lorahub.signing.signed import SignedCard
    from lorahub.signing.trust import KeyRecord, StaticTrust, TrustLookup
    from lorahub.training.config import TrainConfig
    from lorahub.training.loop import Step
    from lorahub.unset import Unset

_HOMES = {
    "lorahub.unset": ("Unset",),
    "lorahub.licenses.engine": ("Verdict",),
    "lorahub.provenance.ca": ("CertificateInfo", "LocalCA", "ProvenanceSettings"),
    "lorahub.provenance.read": ("AdapterFacts", "ImageReport"),
    "lorahub.provenance.sign": ("AdapterUse", "BaseRef", "C2paCredentials", "SignedImage", "TrainingMiningEntry"),
    "lorahub.registry.catalog": ("AdapterVersion", "Filters", "RoleRow"),
    "lorahub.sdk.adding": ("AddOptions", "AddResult"),
    "lorahub.sdk.backup": ("BackupResult", "RestoreResult"),
    "lorahub.sdk.baking": ("BakeResult",),
    "lorahub.sdk.batch": ("BatchResult",),
    "lorahub.sdk.distribution": ("PullResult", "PushResult"),
    "lorahub.sdk.exporting": ("ConvertResult", "ExportResult"),
    "lorahub.sdk.generating": ("GenerateResult",),
    "lorahub.sdk.hub": ("Hub", "IdentityView"),
    "lorahub.sdk.inspect": ("Report", "inspect"),
    "lorahub.sdk.library": ("ScanResult",),
    "lorahub.sdk.browsing": ("Page",),
    "lorahub.sdk.lineage": ("Child", "ChildIndex", "LineageNode"),
    "lorahub.sdk.locating": ("LibraryEntry",),
    "lorahub.sdk.entry": ("apply_prompt", "load", "stack"),
    "lorahub.sdk.merging": ("MergeResult",),
    "lorahub.sdk.oms": ("OmsSignature",),
    "lorahub.sdk.pipelines": ("AdapterHandle",),
    "lorahub.sdk.policy": ("Policy",),
    "lorahub.sdk.prompts": ("AppliedPrompt",),
    "lorahub.sdk.provenance": ("CertificateView",),
    "lorahub.sdk.team": ("TeamPushReport", "TeamStatus"),
    "lorahub.sdk.training": ("TrainResult", "train"),
    "lorahub.sdk.verified": ("VerifiedAdapter",),
    "lorahub.sdk.verifying": ("VerifyReport",),
    "lorahub.signing.keys": ("Identity", "Signer"),
    "lorahub.signing.signed": ("SignedCard",),
    "lorahub.signing.trust": ("KeyRecord", "StaticTrust", "TrustLookup"),
    "lorahub.training.config": ("TrainConfig",),
    "lorahub.training.loop": ("Step",),
}
"""Where each lazily loaded public name lives: the module is imported on first access, not with ``lorahub``."""

_LAZY: dict[str, tuple[str, str | None]] = {"errors": ("lorahub.errors", None)} | {
    name: (module, name) for module, names in _HOMES.items() for name in names
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lorahub' has no attribute {name!r}")
    import importlib

    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
