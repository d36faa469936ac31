"""``lorahub init`` and ``lorahub config show``."""

from __future__ import annotations

import click

from lorahub.cli import output
from lorahub.cli.context import HubContext, pass_hub_context


def _print_settings(settings: dict[str, object], as_json: bool) -> None:
    if as_json:
        output.print_json(settings)
        return
    sources = settings.get("sources", {})
    for key, value in settings.items():
        if key != "sources":
            origin = f"  [dim]({sources[key]})[/]" if isinstance(sources, dict) and key in sources else ""
            output.stdout.print(f"[bold cyan]{key:<17}[/] {value}{origin}")


@click.command("init")
@click.option("--json", "as_json", is_flag=True, help="Print the settings as JSON.")
@pass_hub_context
def init_command(context: HubContext, as_json: bool) -> None:
    """Create the home: catalog, blob store, key folder, default policy and the certificate authority that
    certifies its identities for Content Credentials (any command does the rest on first use)."""
    root = context.hub.ensure_ca()
    settings = context.hub.describe() | {"certificate_authority": root.subject}
    _print_settings(settings, as_json)
    if not as_json and settings["default_identity"] is None:
        output.stderr.print('next: lorahub keys create "Your Name <you@example.com>"')


@click.group("config")
def config_group() -> None:
    """Show the settings in force."""


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print the settings as JSON.")
@pass_hub_context
def config_show(context: HubContext, as_json: bool) -> None:
    """Home, database, keys, blobs, policy and default identity, with where each setting came from."""
    _print_settings(context.hub.describe(), as_json)
