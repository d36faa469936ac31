"""The public API is ``lorahub.__all__`` (plus ``lorahub.errors``): pinned here, resolvable, documented, and made of
the very types that ``Hub`` and the root functions take and return."""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import lorahub
from lorahub import Hub
from lorahub.dev.example_lora import write_example_lora

PUBLIC = [
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

ROOT_FUNCTIONS = ("apply_prompt", "inspect", "load", "stack", "train")

NOT_LORAHUB = frozenset({
    "Any", "Callable", "Iterator", "Mapping", "Sequence", "Literal", "Never", "None", "Path", "os.PathLike",
    "Image.Image",
})  # fmt: skip
"""Standard-library, typing and PIL names a public signature may use."""

PLAIN_ALIASES = frozenset({"Dtype", "Progress", "Scheduler", "MixedPrecision", "Network", "Quantization"})
"""Aliases of literal strings and callbacks: a caller passes a string or a function, never names the alias."""


def test_all_is_pinned() -> None:
    assert lorahub.__all__ == PUBLIC
    assert sorted(PUBLIC) == PUBLIC


def test_every_public_name_resolves_and_is_listed() -> None:
    for name in lorahub.__all__:
        assert getattr(lorahub, name) is not None, name
    assert set(lorahub.__all__) <= set(dir(lorahub))
    assert inspect.ismodule(lorahub.errors)
    with pytest.raises(AttributeError):
        _ = lorahub.sdk_internals


def test_every_public_name_says_why_to_use_it() -> None:
    """The API reference is generated from these docstrings; a dataclass's generated one (its signature) is none."""
    for name in lorahub.__all__:
        if name == "__version__":
            continue
        doc = inspect.getdoc(getattr(lorahub, name)) or ""
        assert doc and not doc.startswith(f"{name}("), name
    assert '__version__ = "' in (Path(lorahub.__file__).parent / "version.py").read_text(encoding="utf-8")


def _public_callables() -> Iterator[tuple[str, Callable[..., Any]]]:
    for name, member in inspect.getmembers(Hub):
        if name.startswith("_"):
            continue
        if isinstance(member, property):
            assert member.fget is not None
            yield f"Hub.{name}", member.fget
        elif callable(member):
            yield f"Hub.{name}", member
    for name in ROOT_FUNCTIONS:
        yield name, getattr(lorahub, name)


def _named_types(annotation: str) -> set[str]:
    """The capitalised (class-like) names an annotation string mentions: ``list[AdapterVersion] | None``."""
    return {n for n in re.findall(r"[A-Za-z_][\w.]*", annotation) if n.split(".")[-1][:1].isupper()}


def test_every_type_a_public_signature_names_is_public() -> None:
    """Whatever a user must name to call a Hub method or a root function, or to annotate what it returns, is
    importable from ``lorahub``: nothing public leads into an internal module."""
    missing: dict[str, set[str]] = {}
    for label, function in _public_callables():
        signature = inspect.signature(function)
        annotations = [p.annotation for p in signature.parameters.values()] + [signature.return_annotation]
        for annotation in annotations:
            if annotation is inspect.Parameter.empty:
                continue
            assert isinstance(annotation, str), (label, annotation)  # the modules use postponed annotations
            unknown = _named_types(annotation) - set(lorahub.__all__) - NOT_LORAHUB - PLAIN_ALIASES
            if unknown:
                missing.setdefault(label, set()).update(unknown)
    assert missing == {}


def test_no_catch_all_keywords_on_the_public_surface() -> None:
    """Every option a Hub method or root function takes is a named, typed keyword (``train``'s ``**unknown`` is
    typed ``Never``: checkers refuse any keyword it would catch, and at run time it names the known settings)."""
    for label, function in _public_callables():
        for parameter in inspect.signature(function).parameters.values():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                assert (label, parameter.annotation) == ("train", "Never")
            assert parameter.kind is not inspect.Parameter.VAR_POSITIONAL, label


def test_train_takes_every_train_config_setting() -> None:
    parameters = inspect.signature(lorahub.train).parameters
    for setting in dataclasses.fields(lorahub.TrainConfig):
        assert parameters[setting.name].kind is inspect.Parameter.KEYWORD_ONLY, setting.name
        assert parameters[setting.name].default is lorahub.Unset.UNSET, setting.name


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Hub:
    """A fresh SQLite home with one identity (the default signer)."""
    monkeypatch.delenv("LORAHUB_DATABASE_URL", raising=False)
    opened = Hub.open(tmp_path / "home")
    opened.create_identity("Alice <alice@example.com>")
    return opened


def test_train_refuses_an_unknown_setting_by_name(hub: Hub, tmp_path: Path) -> None:
    with pytest.raises(lorahub.errors.TrainingError, match="unknown training setting"):
        lorahub.train(tmp_path, tmp_path, hub=hub, learning_rate=1.0)  # type: ignore[arg-type]


def _adapter(tmp_path: Path, name: str, seed: int) -> Path:
    path = tmp_path / "files" / f"{name}.safetensors"
    path.parent.mkdir(exist_ok=True)
    write_example_lora(path, rank=1, seed=seed, name=name)
    return path


def test_hub_returns_the_public_types(hub: Hub, tmp_path: Path) -> None:
    ink = _adapter(tmp_path, "ink", 0)
    added = hub.add(ink, lorahub.AddOptions(name="ink", license="MIT"))
    assert type(added) is lorahub.AddResult
    assert (
        type(hub.add(_adapter(tmp_path, "pixel", 1), lorahub.AddOptions(name="pixel", license="MIT")))
        is lorahub.AddResult
    )
    assert type(hub.identities()[0]) is lorahub.IdentityView
    assert type(hub.identities()[0].identity) is lorahub.Identity
    assert type(hub.signer()) is lorahub.Signer
    assert type(hub.trusted_keys()[0]) is lorahub.KeyRecord
    assert type(hub.policy()) is lorahub.Policy
    assert type(hub.verify(ink)) is lorahub.VerifyReport
    version = hub.version("ink")
    assert type(version) is lorahub.AdapterVersion
    assert [v.name for v in hub.list_versions(lorahub.Filters(name="ink"))] == ["ink"]
    assert type(hub.signed_card(version)) is lorahub.SignedCard
    assert type(hub.license_check(["ink"], use="commercial")) is lorahub.Verdict
    assert type(hub.lineage("ink")) is lorahub.LineageNode
    assert type(hub.convert("ink", tmp_path / "ink-diffusers.safetensors", to="diffusers")) is lorahub.ConvertResult
    assert type(hub.export("ink", tmp_path / "a1111", tool="a1111")) is lorahub.ExportResult
    assert type(hub.merge(["ink:0.5", "pixel:0.5"], out="ink-pixel")) is lorahub.MergeResult
    assert type(hub.add_tree(tmp_path / "files")) is lorahub.BatchResult
    assert type(lorahub.inspect(ink)) is lorahub.Report
    assert type(lorahub.load("ink", hub=hub)) is lorahub.VerifiedAdapter


def test_provenance_methods_return_the_public_types(hub: Hub, tmp_path: Path) -> None:
    from PIL import Image

    hub.add(_adapter(tmp_path, "ink", 0), lorahub.AddOptions(name="ink"))
    assert type(hub.ensure_ca()) is lorahub.CertificateInfo
    assert type(hub.certificate_authority) is lorahub.LocalCA
    assert type(hub.certificate()) is lorahub.CertificateView
    assert type(hub.provenance_settings()) is lorahub.ProvenanceSettings
    assert type(hub.c2pa_credentials()) is lorahub.C2paCredentials
    assert type(hub.adapter_facts(hub.version("ink").content_digest)) is lorahub.AdapterFacts
    base = hub.base_ref("some/base-model")
    assert type(base) is lorahub.BaseRef
    uses = hub.adapter_uses(["ink:0.8"])
    assert type(uses[0]) is lorahub.AdapterUse
    mining = {"ai_training": lorahub.TrainingMiningEntry("notAllowed")}
    image = Image.new("RGB", (16, 16), "white")
    signed = hub.sign_image(image, base=base, adapters=uses, out=tmp_path / "x.png", training_mining=mining, seed=3)
    assert type(signed) is lorahub.SignedImage
    assert type(hub.inspect_image(tmp_path / "x.png")) is lorahub.ImageReport


def test_provenance_settings_change_only_what_is_given(hub: Hub) -> None:
    changed = hub.provenance_settings(leaf_days=30, tsa_url="https://tsa.example/")
    assert hub.provenance_settings(organization="Studio") == dataclasses.replace(changed, organization="Studio")
    assert hub.provenance_settings(tsa_url=None).tsa_url is None
    assert hub.provenance_settings().leaf_days == 30


@pytest.mark.parametrize(
    ("function", "returns"),
    [
        (Hub.generate, "GenerateResult"),
        (Hub.bake, "BakeResult"),
        (Hub.resize, "ConvertResult"),
        (lorahub.apply_prompt, "AppliedPrompt"),
        (lorahub.stack, "list[AdapterHandle]"),
        (lorahub.train, "TrainResult"),
    ],
)
def test_slow_calls_declare_the_public_types(function: Callable[..., Any], returns: str) -> None:
    """Too slow to call here (a diffusers pipeline, a base checkpoint, an SVD of every layer); tests/sdk,
    tests/merge and tests/training call them."""
    assert inspect.signature(function).return_annotation == returns
