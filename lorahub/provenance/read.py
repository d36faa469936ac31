"""Reading Content Credentials back: is the image intact, who signed it, and what made it.

The C2PA library validates the manifest (hashes, signature, certificate profile and trust) and reports one of
three states (docs/provenance.md, "Certificates and the trust model"):

* ``Trusted``: everything checks out and the signing certificate chains to a trust anchor (the home's root, or a
  root added with ``lorahub trust add-ca``);
* ``Valid``: intact and correctly signed, but by a certificate this home does not trust
  (``signingCredential.untrusted``);
* ``Invalid``: something failed: the image changed after signing (``assertion.dataHash.mismatch``), the
  manifest was edited, or the certificate expired with no timestamp (``signingCredential.expired``).

The adapters a manifest lists are then looked up in the home's catalog by content digest, if a home is given.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

from lorahub import errors
from lorahub.provenance.sign import (
    GENERATION_LABEL,
    MIME_TYPES,
    TRAINING_MINING_LABEL,
    c2pa_module,
    image_bytes,
)

NOTES: Final = {
    "signingCredential.untrusted": "the signing certificate does not chain to a CA this home trusts "
    "(`lorahub trust add-ca ROOT.pem` to trust another home's or organisation's root)",
    "signingCredential.expired": "the signing certificate has expired and the image carries no trusted timestamp:"
    " C2PA readers judge the certificate against today's date, so every image it signed is now Invalid",
    "assertion.dataHash.mismatch": "the image bytes changed after signing",
}


@dataclass(frozen=True)
class AdapterFacts:
    """What the home's catalog knows about a content digest."""

    ref: str
    license: str
    consent: str
    card_trusted: bool
    removed: bool = False


class ReadContext(Protocol):
    """What reading needs from a home (a Hub): trust anchors, catalog lookups, the home's own leaves."""

    def c2pa_trust_anchors(self) -> str: ...

    def adapter_facts(self, content_digest: str) -> AdapterFacts | None: ...

    def certificate_owner(self, serial: str) -> str | None: ...


@dataclass(frozen=True)
class AdapterReport:
    """One adapter the manifest names, and (with a home) what the home's catalog says about its digest.
    ``known`` is None when no catalog was consulted."""

    name: str
    version: int | None
    content_digest: str
    weight: float | None
    license: str | None
    signers: tuple[str, ...]
    known: bool | None = None
    catalog_ref: str | None = None
    catalog_license: str | None = None
    consent: str | None = None
    card_trusted: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "content_digest": self.content_digest,
            "weight": self.weight,
            "known": self.known,
            "license": self.catalog_license or self.license,
            "manifest_license": self.license,
            "catalog_ref": self.catalog_ref,
            "consent": self.consent,
            "card_trusted": self.card_trusted,
            "signers": list(self.signers),
        }


@dataclass(frozen=True)
class ImageReport:
    """``lorahub provenance inspect``: the validation state and codes, the signer, and what made the image."""

    path: str
    format: str
    state: str
    codes: tuple[str, ...]
    failures: tuple[tuple[str, str], ...]
    signer: dict[str, Any]
    actions: tuple[dict[str, Any], ...]
    base: dict[str, Any] | None
    adapters: tuple[AdapterReport, ...]
    parameters: dict[str, Any] = field(default_factory=dict)
    training_mining: dict[str, Any] = field(default_factory=dict)
    generator: tuple[dict[str, Any], ...] = ()
    title: str | None = None

    @property
    def trusted(self) -> bool:
        return self.state == "Trusted"

    @property
    def valid(self) -> bool:
        """Intact and correctly signed (trusted or not)."""
        return self.state in ("Trusted", "Valid")

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(NOTES[code] for code in dict.fromkeys(self.codes) if code in NOTES)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "state": self.state,
            "codes": list(self.codes),
            "failures": [{"code": code, "explanation": text} for code, text in self.failures],
            "notes": list(self.notes),
            "signer": self.signer,
            "actions": list(self.actions),
            "base": self.base,
            "adapters": [adapter.as_dict() for adapter in self.adapters],
            "parameters": self.parameters,
            "training_mining": self.training_mining,
            "generator": list(self.generator),
            "title": self.title,
        }


def inspect_image(
    path: str | os.PathLike[str] | bytes, hub: ReadContext | None = None, *, anchors: str | None = None
) -> ImageReport:
    """Validate an image's Content Credentials and describe them. ``hub`` supplies the trust anchors and the
    catalog; ``anchors`` (PEM) replaces the hub's anchors. Without either, nothing is trusted (state at best
    ``Valid``). Raises ``ContentCredentialsMissingError`` when the image has no manifest."""
    data, kind = image_bytes(path)
    where = "<bytes>" if isinstance(path, bytes) else str(path)
    trust = anchors if anchors is not None else (hub.c2pa_trust_anchors() if hub is not None else "")
    store, state, results, certificate = _read(data, kind, trust, where)
    manifest = store.get("manifests", {}).get(store.get("active_manifest"))
    if not isinstance(manifest, dict):
        raise errors.ContentCredentialsMissingError(f"{where}: the manifest store has no active manifest")
    failures = tuple(
        (str(item.get("code")), str(item.get("explanation", "")))
        for item in (results.get("activeManifest") or {}).get("failure", [])
    )
    assertions = {str(a.get("label")): a.get("data") for a in manifest.get("assertions", []) if isinstance(a, dict)}
    generation = assertions.get(GENERATION_LABEL) or {}
    return ImageReport(
        path=where,
        format=kind,
        state=state,
        codes=tuple(code for code, _ in failures),
        failures=failures,
        signer=_signer(manifest.get("signature_info") or {}, certificate, hub),
        actions=_actions(assertions),
        base=generation.get("base") if isinstance(generation, dict) else None,
        adapters=_adapters(generation.get("adapters", []) if isinstance(generation, dict) else [], hub),
        parameters=dict(generation.get("parameters") or {}) if isinstance(generation, dict) else {},
        training_mining=dict((assertions.get(TRAINING_MINING_LABEL) or {}).get("entries") or {}),
        generator=tuple(manifest.get("claim_generator_info") or ()),
        title=manifest.get("title"),
    )


READ_SETTINGS: Final = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
"""Offline: never fetch a remote manifest or an OCSP response (docs/concepts/architecture.md, decision 9)."""


def _read(
    data: bytes, kind: str, anchors: str, where: str
) -> tuple[dict[str, Any], str, dict[str, Any], dict[str, Any]]:
    """The manifest store (SDK JSON), the validation state and results, and the signing certificate's facts of
    the active manifest (from the spec-shaped JSON, which alone carries the certificate's validity)."""
    c2pa = c2pa_module()
    settings: dict[str, Any] = dict(READ_SETTINGS)
    if anchors:
        settings["trust"] = {"user_anchors": anchors}
    try:
        context = c2pa.Context.from_dict(settings)
        reader = c2pa.Reader.try_create(MIME_TYPES[kind], io.BytesIO(data), context=context)
        if reader is None:
            raise errors.ContentCredentialsMissingError(f"{where} has no Content Credentials (no C2PA manifest)")
        with reader:
            store = json.loads(reader.json())
            spec_shaped = json.loads(reader.crjson())
    except c2pa.C2paError as exc:
        if "ManifestNotFound" in type(exc).__name__ or "no JUMBF" in str(exc):
            raise errors.ContentCredentialsMissingError(f"{where} has no Content Credentials ({exc})") from None
        raise errors.ContentCredentialsInvalidError(
            f"{where}: the image or its Content Credentials cannot be parsed ({exc})",
            hint="The file is damaged or truncated; fetch it again from its source.",
        ) from None
    state = str(store.get("validation_state") or "Invalid")
    active = store.get("active_manifest")
    certificate = next(
        (
            m.get("signature", {}).get("certificateInfo") or {}
            for m in spec_shaped.get("manifests", [])
            if isinstance(m, dict) and m.get("label") == active
        ),
        {},
    )
    return store, state, dict(store.get("validation_results") or {}), certificate


def _signer(info: Mapping[str, Any], certificate: Mapping[str, Any], hub: ReadContext | None) -> dict[str, Any]:
    """Who signed: the leaf's CN and O, the CN of its issuer, its validity (without a timestamp the image turns
    Invalid after ``not_after``), and the home's identity when the leaf is one this home issued or imported."""
    serial = info.get("cert_serial_number")
    owner = hub.certificate_owner(str(serial)) if hub is not None and serial is not None else None
    validity = certificate.get("validity") or {}
    return {
        "name": info.get("common_name"),
        "organization": info.get("issuer"),
        "issuer": (certificate.get("issuer") or {}).get("CN"),
        "serial": serial,
        "algorithm": info.get("alg"),
        "time": info.get("time"),
        "not_before": validity.get("notBefore"),
        "not_after": validity.get("notAfter"),
        "identity": owner,
    }


def _actions(assertions: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    found: list[dict[str, Any]] = []
    for label in ("c2pa.actions.v2", "c2pa.actions"):
        data = assertions.get(label)
        for action in data.get("actions", []) if isinstance(data, dict) else []:
            agent = action.get("softwareAgent")
            found.append(
                {
                    "action": action.get("action"),
                    "digital_source_type": action.get("digitalSourceType"),
                    "software_agent": agent if isinstance(agent, dict) else {"name": agent} if agent else None,
                    "description": action.get("description"),
                }
            )
    return tuple(found)


def _adapters(listed: Sequence[Any], hub: ReadContext | None) -> tuple[AdapterReport, ...]:
    reports = []
    for item in listed:
        if not isinstance(item, dict) or not isinstance(item.get("content_digest"), str):
            continue
        weight = item.get("weight")
        report = AdapterReport(
            name=str(item.get("name")),
            version=item.get("version") if isinstance(item.get("version"), int) else None,
            content_digest=item["content_digest"],
            weight=float(weight) if isinstance(weight, (int, float)) else None,
            license=item.get("license"),
            signers=tuple(str(s) for s in item.get("signers") or ()),
        )
        reports.append(_with_catalog(report, hub))
    return tuple(reports)


def _with_catalog(report: AdapterReport, hub: ReadContext | None) -> AdapterReport:
    if hub is None:
        return report
    facts = hub.adapter_facts(report.content_digest)
    if facts is None:
        return replace(report, known=False)
    return replace(
        report,
        known=True,
        catalog_ref=facts.ref,
        catalog_license=facts.license,
        consent=facts.consent,
        card_trusted=facts.card_trusted,
    )
