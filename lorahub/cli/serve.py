"""``lorahub serve``: the catalogue as a local web site (library, adapters, provenance, audit) and a JSON API."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import click
from rich.markup import escape

from lorahub.cli import output
from lorahub.cli.adapters import parse_size
from lorahub.cli.context import HubContext, pass_hub_context

if TYPE_CHECKING:
    from lorahub.web.server import Started


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on (loopback by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="0: any free port.")
@click.option("--open", "open_browser", is_flag=True, help="Open the catalogue in the default browser.")
@click.option(
    "--allow-writes",
    is_flag=True,
    help="Allow add, sign, trust and remove from the browser and the API, with the token printed at start.",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="Another host name the server answers for (repeatable); every other Host header is refused.",
)
@click.option(
    "--max-upload", default="32M", show_default=True, help="The largest image (or other request) accepted (K, M, G)."
)
@pass_hub_context
def serve_command(
    context: HubContext,
    /,
    *,
    host: str,
    port: int,
    open_browser: bool,
    allow_writes: bool,
    allowed_hosts: tuple[str, ...],
    max_upload: str,
) -> None:
    """Browse the catalogue in a web browser: previews, badges, lineage graphs, loss curves, verification,
    licences, Content Credentials of images, the audit log; and a JSON API under /api/ (/api/openapi.json).

    Read-only unless --allow-writes; it then prints a link holding this session's write token, which the browser
    must open once (API clients send it as `Authorization: Bearer TOKEN`). Needs `pip install 'lorahub[serve]'`.
    """
    from lorahub.web.server import require_extra, serve

    require_extra()
    from lorahub.web.app import ServeOptions

    options = ServeOptions(
        host=host,
        port=port,
        allow_writes=allow_writes,
        allowed_hosts=allowed_hosts,
        max_upload=parse_size(max_upload),
    )
    serve(context.hub, options, open_browser=open_browser, announce=_announce)


def _announce(started: Started) -> None:
    say = functools.partial(output.stderr.print, soft_wrap=True)  # a link cut in two cannot be opened
    say(f"lorahub serves this catalogue at [bold]{escape(started.url)}[/]  (Ctrl-C stops it)")
    if not started.loopback:
        say(
            "[yellow]warning:[/] listening beyond this machine: anyone who can reach the address can read the "
            "catalogue (Host names allowed: loopback, --host and --allowed-host)"
        )
    if started.write_url is not None:
        say(f"writes allowed: open [bold]{escape(started.write_url)}[/] once to write from a browser")
    else:
        say("read-only (start with --allow-writes to add, sign, trust or remove from the browser)")
