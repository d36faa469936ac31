"""``lorahub license list | show | check``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from rich.markup import escape
from rich.table import Table

from lorahub import errors
from lorahub.cli import output
from lorahub.cli.context import HubContext, pass_hub_context

if TYPE_CHECKING:
    from lorahub.licenses import Verdict

VERDICT_STYLE = {
    "allowed": "green",
    "allowed-with-obligations": "green",
    "forbidden": "bold red",
    "uncertain": "yellow",
}


@click.group("license")
def license_group() -> None:
    """Licences as data, and whether adapters may be combined or used a given way (guidance, not legal advice)."""


@license_group.command("list")
@click.option("--json", "as_json", is_flag=True)
def license_list(as_json: bool) -> None:
    """Every licence lorahub knows, with its identifier and aliases."""
    from lorahub.licenses import list_licenses

    licences = list_licenses()
    if as_json:
        output.print_json([lic.as_dict() for lic in licences])
        return
    table = Table(box=None)
    table.add_column("id", no_wrap=True)
    table.add_column("name")
    table.add_column("commercial (model / outputs)")
    table.add_column("families")
    for lic in licences:
        commercial = f"{lic.commercial_use_model.value} / {lic.commercial_use_outputs.value}"
        table.add_row(lic.id, lic.name, commercial, ", ".join(lic.families))
    output.stdout.print(table)


@license_group.command("show")
@click.argument("license_id")
@click.option("--json", "as_json", is_flag=True)
def license_show(license_id: str, as_json: bool) -> None:
    """One licence's terms, each with the clause it rests on."""
    from lorahub.licenses import get_license

    lic = get_license(license_id)
    data = lic.as_dict()
    if as_json:
        output.print_json(data)
        return
    output.stdout.print(f"[bold]{escape(lic.name)}[/]  {lic.id}\naliases: {escape(', '.join(lic.aliases))}")
    output.stdout.print(f"text: {lic.url or 'n/a'}")
    for name, term in data.items():
        if isinstance(term, dict) and "clause" in term:
            sure = "" if term["certain"] else " [yellow](uncertain)[/]"
            output.stdout.print(f"[cyan]{name:<28}[/] {escape(term['value'])}{sure}  [dim]{escape(term['clause'])}[/]")


@license_group.command("check")
@click.argument("items", nargs=-1)
@click.option("--license", "licenses", multiple=True, help="A licence id or alias to include (repeatable).")
@click.option("--base-license", help="The base model's licence, e.g. LicenseRef-FLUX-1-dev-Non-Commercial.")
@click.option("--merge", is_flag=True, help="Ask whether the adapters may be merged and the result distributed.")
@click.option("--use", type=click.Choice(["commercial", "non-commercial", "research"]), help="Ask about a use.")
@click.option(
    "--of",
    "subject",
    type=click.Choice(["outputs", "model"]),
    default="outputs",
    show_default=True,
    help="With --use: the generated images, or the adapter/model itself.",
)
@click.option("--json", "as_json", is_flag=True)
@pass_hub_context
def license_check(
    context: HubContext,
    *,
    items: tuple[str, ...],
    licenses: tuple[str, ...],
    base_license: str | None,
    merge: bool,
    use: str | None,
    subject: str,
    as_json: bool,
) -> None:
    """May ITEMS (catalogued adapters or licence ids) go on this base, be merged, or be used this way?

    With no ITEMS, --base-license and --use ask about the base alone (its outputs, or with --of model the model).
    Exits 0 when allowed (with or without obligations), 9 when forbidden, 10 when uncertain.
    """
    verdict = context.hub.license_check(
        list(items), licenses=list(licenses), base_license=base_license, merge=merge, use=use, subject=subject
    )
    if as_json:
        output.print_json(verdict.as_dict())
    else:
        _render(verdict)
    if verdict.verdict == "forbidden":
        raise errors.LicenseForbiddenError("forbidden by the licences involved")
    if verdict.verdict == "uncertain":
        raise errors.LicenseUncertainError("the answer is uncertain")


def _render(verdict: Verdict) -> None:
    style = VERDICT_STYLE.get(verdict.verdict, "")
    output.stdout.print(f"[{style}]{verdict.verdict}[/]  effective licence: {', '.join(verdict.effective_license)}")
    for reason in verdict.reasons:
        output.stdout.print(f"  - {escape(reason.text)}  [dim]({escape(reason.license)}: {escape(reason.clause)})[/]")
    for obligation in verdict.obligations:
        output.stdout.print(f"  obligation: {escape(obligation)}")
