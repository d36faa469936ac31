"""The ``lorahub`` command. Commands are thin: parse, call one SDK function, render.

Nothing heavy is imported at start-up: ``lorahub --help`` must stay instant and torch-free.
"""

from __future__ import annotations

from pathlib import Path

import click

from lorahub import __version__
from lorahub.cli import exits
from lorahub.cli.adapters import (
    add_command,
    export_command,
    gc_command,
    list_command,
    rm_command,
    search_command,
    show_command,
    sign_command,
)
from lorahub.cli.bake import bake_command
from lorahub.cli.combine import lineage_command, merge_command
from lorahub.cli.context import HubContext
from lorahub.cli.convert import convert_command, resize_command
from lorahub.cli.dataset import dataset_group
from lorahub.cli.dev import dev_group
from lorahub.cli.distribution import pull_command, push_command
from lorahub.cli.generate import generate_command
from lorahub.cli.home import config_group, init_command
from lorahub.cli.inspect import inspect_command
from lorahub.cli.keys import keys_group, trust_group
from lorahub.cli.library import scan_command
from lorahub.cli.licenses import license_group
from lorahub.cli.provenance import (
    keys_cert,
    keys_import_cert,
    keys_issue_cert,
    provenance_group,
    trust_add_ca,
    trust_list_ca,
)
from lorahub.cli.serve import serve_command
from lorahub.cli.team import backup_command, restore_command, team_group
from lorahub.cli.train import train_command
from lorahub.cli.verify import audit_command, verify_command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="lorahub")
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="LORAHUB_HOME",
    help="The lorahub home (catalog, blobs, keys). [env var: LORAHUB_HOME; default: a per-user data folder]",
)
@click.pass_context
def cli(ctx: click.Context, home: Path | None) -> None:
    """lorahub: catalog, verify, convert, merge and train LoRA adapters for diffusion models.

    The catalog database is SQLite in the home unless LORAHUB_DATABASE_URL names another (e.g. PostgreSQL).
    Set LORAHUB_DEBUG=1 to see tracebacks.
    """
    ctx.obj = HubContext(home=home)


for command in (
    init_command,
    config_group,
    keys_group,
    trust_group,
    inspect_command,
    add_command,
    scan_command,
    list_command,
    search_command,
    show_command,
    sign_command,
    rm_command,
    export_command,
    push_command,
    pull_command,
    gc_command,
    verify_command,
    audit_command,
    convert_command,
    resize_command,
    merge_command,
    bake_command,
    lineage_command,
    generate_command,
    license_group,
    dataset_group,
    train_command,
    dev_group,
    provenance_group,
    team_group,
    backup_command,
    restore_command,
    serve_command,
):
    cli.add_command(command)
for command in (keys_import_cert, keys_issue_cert, keys_cert):
    keys_group.add_command(command)
for command in (trust_add_ca, trust_list_ca):
    trust_group.add_command(command)


def main() -> None:
    exits.run(lambda: cli.main(standalone_mode=False))
