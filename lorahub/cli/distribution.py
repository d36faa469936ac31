"""``lorahub push`` and ``lorahub pull``: versions to and from OCI registries."""

from __future__ import annotations

from pathlib import Path

import click

from lorahub import errors
from lorahub.cli import output
from lorahub.cli.context import HubContext, pass_hub_context

INSECURE_HELP = "Plain HTTP instead of HTTPS; accepted only for a registry on loopback (127.0.0.1, ::1, localhost)."


@click.command("push")
@click.argument("ref")
@click.argument("target", metavar="oci://HOST[:PORT]/REPO[:TAG]")
@click.option("--insecure", is_flag=True, help=INSECURE_HELP)
@click.option("--json", "as_json", is_flag=True)
@pass_hub_context
def push_command(context: HubContext, *, ref: str, target: str, insecure: bool, as_json: bool) -> None:
    """Push NAME[@V] to an OCI registry as a CNCF ModelPack model, its signed card attached.

    Without a TAG the version is tagged vN, and latest too when it is the newest. Credentials come from
    `docker login` (the Docker config or REGISTRY_AUTH_FILE) or LORAHUB_REGISTRY_USERNAME/PASSWORD.
    """
    result = context.hub.push(ref, target, insecure=insecure)
    if as_json:
        output.print_json(result.as_dict())
        return
    already = "" if result.uploaded else " (the registry had its file already)"
    output.stdout.print(f"pushed {result.ref}{already}")
    output.stdout.print(f"  {result.reference}")
    output.stdout.print(f"  tags: {', '.join(result.tags)}; attached: {', '.join(result.attached)}")


@click.command("pull")
@click.argument("source", metavar="oci://HOST[:PORT]/REPO[:TAG|@DIGEST]")
@click.option("--insecure", is_flag=True, help=INSECURE_HELP)
@click.option("--policy", type=click.Path(path_type=Path, dir_okay=False), help="Policy TOML (default: the home's).")
@click.option("--json", "as_json", is_flag=True)
@pass_hub_context
def pull_command(context: HubContext, *, source: str, insecure: bool, policy: Path | None, as_json: bool) -> None:
    """Pull a model pushed by `lorahub push`, verify it, and catalogue it under the card it came with.

    The checks are those of `lorahub verify FILE`: the file against its card, the card's signatures against this
    home's trust, the policy. When one fails nothing is written and the command exits 7. Without a TAG or DIGEST,
    latest is pulled.
    """
    try:
        result = context.hub.pull(source, insecure=insecure, policy=policy)
    except errors.PullRefusedError as refused:
        if as_json:
            output.print_json(refused.report.as_dict())
        else:
            output.print_checks(refused.report.checks)
        raise
    if as_json:
        output.print_json(result.as_dict())
        return
    output.print_checks(result.report.checks)
    ref = f"{result.added.name}@{result.added.version}"
    state = "already catalogued as" if result.added.already else "catalogued"
    output.stdout.print(f"{state} {ref} from {result.source} ({result.digest[:19]}…)")
