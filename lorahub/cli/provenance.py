"""``lorahub provenance …`` (Content Credentials of images), ``lorahub keys import-cert|issue-cert|cert`` and
``lorahub trust add-ca|list-ca``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lorahub import errors
from lorahub.cli import output
from lorahub.cli.context import HubContext, pass_hub_context

if TYPE_CHECKING:
    from lorahub.provenance import CertificateInfo, ImageReport

STATE_STYLE = {"Trusted": "bold green", "Valid": "yellow", "Invalid": "bold red"}


@click.group("provenance")
def provenance_group() -> None:
    """C2PA Content Credentials: sign images with what made them, and check images you receive."""


@provenance_group.command("inspect")
@click.argument("image", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_hub_context
def provenance_inspect(context: HubContext, image: Path, as_json: bool) -> None:
    """Validate IMAGE's Content Credentials: state (Trusted / Valid / Invalid) and codes, signer, actions, and
    the adapters it names, each looked up in this home's catalog by content digest.

    Exits 0 when the credentials are Trusted or Valid (intact but signed by a CA this home does not trust), 7 when
    they are Invalid or missing.
    """
    report = context.hub.inspect_image(image)
    if as_json:
        output.print_json(report.as_dict())
    else:
        _print_report(report)
    if not report.valid:
        raise errors.ContentCredentialsInvalidError(
            f"{image}: the Content Credentials are Invalid ({', '.join(report.codes)})"
        )


@provenance_group.command("sign")
@click.argument("image", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--base",
    "base_name",
    required=True,
    help="The base model: a pipeline folder or checkpoint file (hashed), or a name.",
)
@click.option("--base-digest", help="SHA-256 of the base model's weights (instead of hashing --base).")
@click.option("--base-license", help="The base model's licence identifier.")
@click.option(
    "--adapter", "adapters", multiple=True, metavar="NAME[@V][:W]", help="A catalogued adapter and its weight."
)
@click.option("--prompt")
@click.option("--negative", "negative_prompt", help="The negative prompt.")
@click.option("--seed", type=int)
@click.option("--steps", type=int)
@click.option("--scheduler")
@click.option(
    "--training-mining",
    "training_mining",
    multiple=True,
    metavar="ENTRY=USE",
    help="e.g. ai_training=allowed (USE: allowed, notAllowed, constrained). Default: see docs/provenance.md.",
)
@click.option("--key", help="The identity to sign with (default: the default identity).")
@click.option("--thumbnail", is_flag=True, help="Embed a 256-px JPEG thumbnail (off by default).")
@click.option("--replace", is_flag=True, help="Sign even if IMAGE already carries Content Credentials (drops them).")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False), help="Where to write it.")
@click.option("--json", "as_json", is_flag=True)
@pass_hub_context
def provenance_sign(
    context: HubContext,
    image: Path,
    *,
    base_name: str,
    base_digest: str | None,
    base_license: str | None,
    adapters: tuple[str, ...],
    prompt: str | None,
    negative_prompt: str | None,
    seed: int | None,
    steps: int | None,
    scheduler: str | None,
    training_mining: tuple[str, ...],
    key: str | None,
    thumbnail: bool,
    replace: bool,
    out: Path,
    as_json: bool,
) -> None:
    """Sign IMAGE (PNG, JPEG or WebP) as generated from the base model with the given adapters, write it to OUT
    and record a `generate` audit event. `lorahub generate` does this for the images it makes."""
    from lorahub.provenance import BaseRef

    hub = context.hub
    base = (
        BaseRef(base_name, base_digest, base_license) if base_digest else hub.base_ref(base_name, license=base_license)
    )
    signed = hub.sign_image(
        image,
        base=base,
        adapters=hub.adapter_uses(list(adapters)),
        key=key,
        out=out,
        replace=replace,
        thumbnail=thumbnail,
        training_mining=_pairs(training_mining),
        prompt=prompt,
        negative_prompt=negative_prompt,
        seed=seed,
        steps=steps,
        scheduler=scheduler,
    )
    if as_json:
        output.print_json({"out": str(signed.path), "sha256": signed.sha256, "format": signed.format})
        return
    output.stdout.print(f"signed {signed.path}\nsha256 {signed.sha256}")


@provenance_group.command("settings")
@click.option("--tsa-url", help="An RFC 3161 timestamp authority, contacted at every signing (needs the network).")
@click.option("--no-tsa-url", is_flag=True, help="Remove the timestamp-authority URL.")
@click.option("--leaf-days", type=int, help="Validity of the leaf certificates the home's CA issues.")
@click.option("--organization", help="The O= of issued certificates (readers show it as the issuer).")
@click.option("--json", "as_json", is_flag=True)
@pass_hub_context
def provenance_settings(
    context: HubContext,
    *,
    tsa_url: str | None,
    no_tsa_url: bool,
    leaf_days: int | None,
    organization: str | None,
    as_json: bool,
) -> None:
    """Show or change the Content Credentials settings (new values apply to certificates issued afterwards)."""
    changes: dict[str, Any] = {}
    if tsa_url is not None or no_tsa_url:
        changes["tsa_url"] = None if no_tsa_url else tsa_url
    if leaf_days is not None:
        changes["leaf_days"] = leaf_days
    if organization is not None:
        changes["organization"] = organization
    settings = context.hub.provenance_settings(**changes)
    data = {"organization": settings.organization, "leaf_days": settings.leaf_days, "tsa_url": settings.tsa_url}
    if as_json:
        output.print_json(data)
        return
    for name, value in data.items():
        output.stdout.print(f"[bold cyan]{name:<13}[/] {value}")


# --- keys: certificates ----------------------------------------------------------------------------------------


@click.command("import-cert")
@click.argument("chain_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", help="The identity the leaf certifies (default: the default identity).")
@pass_hub_context
def keys_import_cert(context: HubContext, chain_file: Path, key: str | None) -> None:
    """Sign images with CHAIN_FILE (PEM, leaf first), e.g. your organisation's C2PA certificate for this key."""
    chain = context.hub.import_certificate(chain_file.read_bytes(), key)
    output.stdout.print(f"imported {chain[0].subject} (issued by {chain[0].issuer}, until {chain[0].not_after})")


@click.command("issue-cert")
@click.option("--key", help="The identity (default: the default identity).")
@click.option("--days", type=int, help="Validity in days (default: the leaf_days setting, 10 years).")
@pass_hub_context
def keys_issue_cert(context: HubContext, key: str | None, days: int | None) -> None:
    """Issue a fresh certificate for an identity from the home's CA (replaces an imported one)."""
    chain = context.hub.issue_certificate(key, days=days)
    output.stdout.print(f"issued {chain[0].subject} serial {chain[0].serial}, valid until {chain[0].not_after}")


@click.command("cert")
@click.option("--key", help="The identity (default: the default identity).")
@click.option("--pem", "as_pem", is_flag=True, help="Print the chain as PEM, leaf first.")
@click.option("--json", "as_json", is_flag=True)
@pass_hub_context
def keys_cert(context: HubContext, key: str | None, as_pem: bool, as_json: bool) -> None:
    """The certificate chain an identity signs images with (issued on first need)."""
    view = context.hub.certificate(key)
    if as_pem:
        click.echo(view.pem, nl=False)
        return
    if as_json:
        chain = [_cert_dict(info) for info in view.chain]
        output.print_json(
            {"identity": view.identity, "fingerprint": view.fingerprint, "source": view.source} | {"chain": chain}
        )
        return
    output.stdout.print(f"{view.identity}  ({view.source})")
    for info in view.chain:
        output.stdout.print(
            f"  {info.subject}\n    issuer {info.issuer}\n    valid {info.not_before} .. {info.not_after}"
        )


# --- trust: certificate authorities ----------------------------------------------------------------------------


@click.command("add-ca")
@click.argument("pem_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_hub_context
def trust_add_ca(context: HubContext, pem_file: Path) -> None:
    """Trust the CA certificate(s) in PEM_FILE when checking images (e.g. another home's ca/root/ca.pem)."""
    for info in context.hub.trust_add_ca(pem_file.read_bytes()):
        output.stdout.print(f"trusted CA {info.subject}  sha256 {info.sha256}")


@click.command("list-ca")
@click.option("--json", "as_json", is_flag=True)
@pass_hub_context
def trust_list_ca(context: HubContext, as_json: bool) -> None:
    """The CAs whose certificates this home trusts in images: its own root, then those added."""
    infos = context.hub.trusted_cas()
    if as_json:
        output.print_json([_cert_dict(info) for info in infos])
        return
    for info in infos:
        output.stdout.print(f"{info.source:<13} {info.subject}  until {info.not_after}")


# --- rendering -------------------------------------------------------------------------------------------------


def _print_report(report: ImageReport) -> None:
    out = output.stdout
    style = STATE_STYLE.get(report.state, "bold")
    codes = f"  ({', '.join(report.codes)})" if report.codes else ""
    out.print(f"[{style}]{report.state}[/]{codes}  {report.path}")
    for note in report.notes:
        out.print(f"  note: {note}")
    signer = report.signer
    who = signer.get("identity") or signer.get("name")
    out.print(f"signer   {who}  (O={signer.get('organization')}, serial {signer.get('serial')})")
    out.print(f"         certificate from {signer.get('issuer')}, valid until {signer.get('not_after')}")
    for action in report.actions:
        agent = action.get("software_agent") or {}
        out.print(
            f"action   {action.get('action')}  {action.get('digital_source_type')}"
            f"  by {agent.get('name')} {agent.get('version', '')}"
        )
    if report.base:
        base = report.base
        license_id = base.get("license") or "not stated"
        out.print(f"base     {base.get('name')}  digest {base.get('digest')}  licence {license_id}")
    for adapter in report.adapters:
        known = {
            True: "[green]catalogued[/] " + str(adapter.catalog_ref),
            False: "[yellow]not in this catalog[/]",
            None: "",
        }[adapter.known]
        trust = (
            ""
            if adapter.card_trusted is None
            else ("card trusted" if adapter.card_trusted else "[yellow]card not trusted[/]")
        )
        out.print(
            f"adapter  {adapter.name}@{adapter.version} weight {adapter.weight}"
            f"  {adapter.content_digest[:16]}…  {known}"
            f"  licence {adapter.catalog_license or adapter.license}  consent {adapter.consent}  {trust}"
        )
    entries = ", ".join(
        f"{k.removeprefix('cawg.')}={v.get('use')}" for k, v in report.training_mining.items() if isinstance(v, dict)
    )
    if entries:
        out.print(f"training {entries}")


def _cert_dict(info: CertificateInfo) -> dict[str, Any]:
    return {
        "subject": info.subject,
        "issuer": info.issuer,
        "serial": info.serial,
        "not_before": info.not_before,
        "not_after": info.not_after,
        "sha256": info.sha256,
        "key_fingerprint": info.key_fingerprint,
        "source": info.source,
    }


def _pairs(values: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, use = value.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{value!r} is not ENTRY=USE", param_hint="--training-mining")
        pairs[name.strip()] = use.strip()
    return pairs
