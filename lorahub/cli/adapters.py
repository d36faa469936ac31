"""The catalog commands: add, list, show, search, rm, export, gc."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.table import Table

from lorahub.cli import exits, output
from lorahub.cli.context import HubContext, pass_hub_context

if TYPE_CHECKING:
    from lorahub.registry.catalog import AdapterVersion

COMMERCIAL = click.Choice(["none", "image", "rent", "sell"])


@click.command("add")
@click.argument("target")
@click.option("--name", help="Adapter name (default: from the file's metadata or its file name).")
@click.option("--version", type=click.IntRange(1), help="Version number (default: the next one).")
@click.option("--base-model", help="Base model name, e.g. stabilityai/stable-diffusion-xl-base-1.0.")
@click.option(
    "--license", "license_id", help="Licence id (SPDX or LicenseRef-…), e.g. LicenseRef-CreativeML-OpenRAIL-M."
)
@click.option("--commercial", type=COMMERCIAL, multiple=True, help="Commercial uses allowed (Civitai-style).")
@click.option("--trigger", "triggers", multiple=True, help="A trigger word or phrase (repeatable).")
@click.option("--consent", type=click.Path(path_type=Path), help="A JSON dataset-consent record.")
@click.option("--description")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--sign/--no-sign", default=True, show_default=True, help="Sign the card with the default identity.")
@click.option("--embed", is_flag=True, help="Also write the signed card into the file's own header (atomic rewrite).")
@click.option("--sidecar", is_flag=True, help="Also write the signed card to FILE.lorahub.json beside the file.")
@click.option("--allow-duplicate", is_flag=True, help="Catalogue content that is already catalogued.")
@click.option("--sha256", "expected_sha256", help="URL only: refuse the download unless its SHA-256 is this.")
@click.option("--allow-http", is_flag=True, help="URL only: allow plain http:// (default: HTTPS only).")
@click.option(
    "--max-size", type=str, default="20G", show_default=True, help="URL only: the largest download (K, M, G)."
)
@click.option("--in-place", is_flag=True, help="Catalogue the FILE or DIR where it lies: nothing is copied.")
@click.option("--link", is_flag=True, help="--in-place only: hard-link into the blob store (same filesystem).")
@click.option("--json", "as_json", is_flag=True)
@pass_hub_context
def add_command(context: HubContext, /, target: str, as_json: bool, **options: Any) -> None:
    """Catalog (and sign) an adapter FILE, every .safetensors under a DIR, or a file at a URL.

    With --in-place, the FILE or DIR stays where it is and is catalogued there (see `lorahub scan`).
    """
    from lorahub.cli.library import run_scan
    from lorahub.sdk.adding import AddOptions

    add_options = AddOptions(
        name=options["name"],
        version=options["version"],
        base_model=options["base_model"],
        license=options["license_id"],
        commercial_use=list(options["commercial"]) or None,
        triggers=list(options["triggers"]),
        consent=options["consent"],
        description=options["description"],
        tags=list(options["tags"]),
        sign=options["sign"],
        embed=options["embed"],
        sidecar=options["sidecar"],
        allow_duplicate=options["allow_duplicate"],
    )
    if options["in_place"] or options["link"]:
        run_scan(context, [Path(target)], add_options, find_missing=False, link=options["link"], as_json=as_json)
        return
    if Path(target).is_dir():
        _add_directory(context, Path(target), add_options, as_json)
        return
    if "://" in target:
        result = _add_url(context, target, add_options, options, as_json)
    else:
        result = context.hub.add(Path(target), add_options)
    if as_json:
        output.print_json(result.as_dict())
        return
    if result.already:
        output.stdout.print(f"already catalogued: [bold]{result.name}@{result.version}[/] (same content)")
        return
    signed = "signed" if result.signed_by else "unsigned"
    output.stdout.print(
        f"added [bold]{result.name}@{result.version}[/]  {result.report.format}, {result.report.base_model.family}, "
        f"{signed}  content {result.content_digest[:16]}…"
    )
    for field_name, source in result.suggestions.items():
        output.stderr.print(f"  {field_name} from {source}")


SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str) -> int:
    number, unit = text.strip().upper().rstrip("B") or "0", ""
    if number[-1:] in SIZE_UNITS:
        number, unit = number[:-1], number[-1]
    try:
        return int(float(number) * SIZE_UNITS[unit])
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a size such as 500M or 20G", param_hint="--max-size") from None


def _add_url(context: HubContext, url: str, add_options: Any, options: dict[str, Any], as_json: bool) -> Any:
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=output.stderr, transient=True, disable=as_json) as bar:
        task = bar.add_task("download", total=None)
        return context.hub.add_url(
            url,
            add_options,
            expected_sha256=options["expected_sha256"],
            allow_http=options["allow_http"],
            max_bytes=parse_size(options["max_size"]),
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )


def _add_directory(context: HubContext, root: Path, options: Any, as_json: bool) -> None:

    with output.file_progress("adding", disable=as_json) as advance:
        result = context.hub.add_tree(root, options, progress=advance)
    if as_json:
        output.print_json(result.as_dict())
    else:
        output.stdout.print(
            f"added {len(result.added)}, already catalogued {len(result.already)}, unchanged {len(result.unchanged)}, "
            f"duplicates {len(result.duplicates)}, failed {len(result.failures)}"
        )
        for path, existing in result.duplicates:
            output.stdout.print(f"  duplicate  {path}  (same tensors as {existing})")
        for path, code, message in result.failures:
            output.stdout.print(f"  [red]failed[/]     {escape(str(path))}  {escape(f'error[{code}]: {message}')}")
    exits.settle_batch(
        len(result.failures),
        {str(path): text for path, text in result.tracebacks.items()},
        message=f"{len(result.failures)} file(s) under {root} failed",
        hint="Fix or remove the files listed above and run the same command again: finished files are skipped.",
    )


def _filters(**options: Any) -> Any:
    from lorahub.registry.catalog import Filters

    return Filters(
        family=options.get("family"),
        format=options.get("format_id"),
        license_id=options.get("license_id"),
        commercial=options.get("commercial"),
        signer=options.get("signer"),
        consent_status=options.get("consent"),
        include_removed=bool(options.get("removed")),
    )


def filter_options(command: Any) -> Any:
    for option in reversed(
        [
            click.option("--family", help="Base family: sd1, sdxl, flux1, …"),
            click.option("--format", "format_id", help="File format: kohya, diffusers, …"),
            click.option("--license", "license_id", help="Licence id."),
            click.option("--commercial/--non-commercial", default=None, help="Commercial use allowed or not."),
            click.option("--signer", help="Signer fingerprint (prefix)."),
            click.option("--consent", help="Dataset consent status, e.g. unknown."),
            click.option("--removed", is_flag=True, help="Include removed versions."),
            click.option("--json", "as_json", is_flag=True),
        ]
    ):
        command = option(command)
    return command


def _table(versions: list[AdapterVersion], as_json: bool) -> None:
    if as_json:
        from lorahub.sdk.hub import summary

        output.print_json([summary(v) for v in versions])
        return
    table = Table("name", "format", "family", "licence", "signed", "content", box=None)
    for v in versions:
        removed = " [red](removed)[/]" if v.removed_at else ""
        table.add_row(
            f"{v.ref}{removed}",
            v.format,
            v.family,
            v.license_id,
            "yes" if v.signers else "no",
            v.content_digest[:16] + "…",
        )
    output.stdout.print(table)
    output.stderr.print(f"{len(versions)} version(s)")


@click.command("list")
@filter_options
@click.option("--missing", "state", flag_value="missing", help="Library files that are gone (their cards stay).")
@click.option("--changed", "state", flag_value="changed", help="Library files whose bytes are not the catalogued ones.")
@click.option("--duplicates", is_flag=True, help="The same content at several paths or names.")
@pass_hub_context
def list_command(context: HubContext, /, as_json: bool, state: str | None, duplicates: bool, **options: Any) -> None:
    """Catalogued versions, newest first; or, with --missing, --changed or --duplicates, library locations as
    the last scan or verify found them."""
    from lorahub.cli.library import print_duplicates, print_locations

    if duplicates:
        print_duplicates(context.hub.duplicates(), as_json)
    elif state is not None:
        print_locations(context.hub.library(state=state), as_json)
    else:
        _table(context.hub.list_versions(_filters(**options)), as_json)


@click.command("search")
@click.argument("text")
@filter_options
@pass_hub_context
def search_command(context: HubContext, /, text: str, as_json: bool, **options: Any) -> None:
    """Search names, descriptions, trigger words and tags (all words must match)."""
    _table(context.hub.search(text, _filters(**options)), as_json)


@click.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--loss-plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Draw a trained version's loss curve as SVG to FILE, as `lorahub serve` shows it.",
)
@pass_hub_context
def show_command(context: HubContext, ref: str, as_json: bool, loss_plot: Path | None) -> None:
    """A version's card, signatures with their trust, hashes, lineage and audit trail."""
    from lorahub.cli.library import location_lines

    details = context.hub.show(ref)
    if loss_plot is not None:
        _write_loss_plot(details, loss_plot)
    if as_json:
        output.print_json(details)
        return
    card = details["card"]
    output.stdout.print(f"[bold]{card['name']}@{card['version']}[/]  {card['format']}, {card['base_model']['family']}")
    for key in ("description", "trigger_words", "tags", "license", "consent", "content_digest", "created"):
        output.stdout.print(f"[cyan]{key:<15}[/] {escape(str(card.get(key)))}")
    for name, value in card["hashes"].items():
        output.stdout.print(f"[cyan]{name:<15}[/] {value or '-'}")
    for parent in card["lineage"]:
        output.stdout.print(f"[cyan]{'lineage':<15}[/] {parent['relation']} {parent['digest']} {parent['parameters']}")
    for signature in details["signatures"]:
        output.stdout.print(f"[cyan]{'signature':<15}[/] {signature['fingerprint'][:16]}… {signature['trust']}")
    for line in location_lines(details):
        output.stdout.print(f"[cyan]{'file':<15}[/] {escape(line)}")
    for event in details["audit"]:
        output.stdout.print(f"[cyan]{'audit':<15}[/] {event['time']} {event['action']} by {event['actor'][:16]}…")
    for sample in details["samples"]:
        text = f"step {sample['step']}  {sample['prompt']}  {sample['path']}"
        output.stdout.print(f"[cyan]{'sample':<15}[/] {escape(text)}", soft_wrap=True)  # a path stays whole


def _write_loss_plot(details: dict[str, Any], out: Path) -> None:
    from lorahub import errors
    from lorahub.web.svg import loss_points, loss_svg, write_svg

    ref = f"{details['name']}@{details['version']}"
    training = details["card"].get("training")
    if not training:
        raise errors.InvalidArgumentError(
            f"{ref} has no training record, so no loss curve", hint="Only versions `lorahub train` made have one."
        )
    write_svg(loss_svg(loss_points(training.get("loss_curve")), title=f"training loss of {ref}"), out)
    output.stderr.print(f"wrote {escape(str(out))}")


@click.command("sign")
@click.argument("ref")
@click.option("--key", help="The identity to sign with (default: the default identity).")
@click.option(
    "--oms",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write an OpenSSF model-signing bundle over the stored file here instead (model_signing verify key).",
)
@click.option("--json", "as_json", is_flag=True, help="--oms only: print what was signed as JSON.")
@pass_hub_context
def sign_command(context: HubContext, ref: str, key: str | None, oms: Path | None, as_json: bool) -> None:
    """Add your signature to a catalogued card (a curator vouching for it); the card itself never changes.

    With --oms SIG, write instead a sigstore bundle that signs the version's stored file as OpenSSF model signing
    does (an in-toto statement over its SHA-256), which `model_signing verify key FILE --signature SIG
    --public_key KEY.pem` accepts for that file under any name; the card is left as it is.
    """
    if oms is not None:
        signed = context.hub.sign(ref, key=key, oms=oms)
        if as_json:
            output.print_json(signed.as_dict())
            return
        output.stdout.print(
            f"wrote {escape(str(signed.bundle))}: {signed.version.ref} ({escape(signed.model_name)}, sha256 "
            f"{signed.sha256[:16]}…) signed by {escape(signed.signer_name)} {signed.signer[:16]}…"
        )
        return
    if as_json:
        raise click.UsageError("--json goes with --oms")
    view, added = context.hub.sign(ref, key=key)
    state = "signed" if added else "already signed by this key:"
    output.stdout.print(f"{state} {view.ref}")


@click.command("rm")
@click.argument("ref")
@pass_hub_context
def rm_command(context: HubContext, ref: str) -> None:
    """Remove a version (or every version of a name) from the catalog; recorded, blob kept until `gc`."""
    removed = context.hub.remove(ref)
    output.stdout.print("removed " + ", ".join(v.ref for v in removed))


@click.command("export")
@click.argument("ref")
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--for",
    "tool",
    type=click.Choice(["a1111", "comfyui", "hf"]),
    help="Write a folder OUT for this tool: its layout (converted and catalogued if needed) and its sidecars.",
)
@click.option("--weight", type=float, help="--for only: the preferred weight (A1111 json, HF usage snippet).")
@click.option("--dtype", type=click.Choice(["fp16", "bf16", "fp32"]), help="--for only: re-store the factors.")
@click.option(
    "--oms",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write an OpenSSF model-signing bundle over the exported adapter file here.",
)
@click.option("--key", help="--oms only: the identity to sign with (default: the default identity).")
@click.option("--json", "as_json", is_flag=True)
@pass_hub_context
def export_command(
    context: HubContext,
    /,
    *,
    ref: str,
    out: Path,
    tool: str | None,
    weight: float | None,
    dtype: Any,
    oms: Path | None,
    key: str | None,
    as_json: bool,
) -> None:
    """Write a catalogued version to OUT with its signed card embedded in the header.

    With --for a1111|comfyui|hf, OUT is a folder: the adapter in the layout the tool reads (kohya for A1111, Forge
    and ComfyUI; diffusers' pytorch_lora_weights.safetensors for Hugging Face), the signed card beside it, and the
    tool's sidecars (A1111 NAME.json, NAME.civitai.info, a Hub README.md model card).

    With --oms SIG, SIG gets an OpenSSF model-signing bundle over the exported adapter file (the bytes written, card
    included): `model_signing verify key FILE --signature SIG --public_key KEY.pem` checks it.
    """
    if key is not None and oms is None:
        raise click.UsageError("--key goes with --oms")
    if tool is None:
        if out.is_dir():
            raise click.BadParameter(f"{out} is a directory (use --for to export a folder)", param_hint="OUT")
        if weight is not None or dtype is not None:
            raise click.UsageError("--weight and --dtype go with --for")
        view = context.hub.export(ref, out, oms=oms, key=key)
        if as_json:
            from lorahub.sdk.hub import summary

            output.print_json({**summary(view), "out": str(out), "oms": str(oms) if oms else None})
            return
        output.stdout.print(f"exported {view.ref} to {escape(str(out))}")
        if oms is not None:
            output.stdout.print(f"OpenSSF model-signing bundle: {escape(str(oms))}")
        return
    result = context.hub.export(ref, out, tool=tool, weight=weight, dtype=dtype, oms=oms, key=key)
    if as_json:
        output.print_json(result.as_dict())
        return
    _print_export(result)


def _print_export(result: Any) -> None:
    conversion = result.conversion
    if conversion is not None:
        state = "already catalogued as" if conversion.reused else "catalogued as"
        output.stdout.print(
            f"converted {result.requested.ref} ({result.requested.format}) → {conversion.report.target}, "
            f"max abs ΔW error {conversion.report.max_abs_error:.3g}; {state} [bold]{result.version.ref}[/]"
        )
    output.stdout.print(f"exported [bold]{result.version.ref}[/] for {result.tool}:")
    for path in result.files.values():
        output.stdout.print(f"  {escape(str(path))}")


@click.command("gc")
@pass_hub_context
def gc_command(context: HubContext) -> None:
    """Delete blobs no catalogued version uses any more, and what writers that died left behind (temporary files,
    unfinished uploads). Safe while other processes or machines add: a blob an add has not recorded yet is kept."""
    removed, freed = context.hub.gc()
    output.stdout.print(f"removed {removed} blob(s), {freed:,} bytes")
