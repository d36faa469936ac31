"""The ``lorahub`` command. Commands are thin: parse, call one SDK function, render.

Nothing heavy is imported at start-up: ``lorahub --help`` must stay instant and torch-free.
"""

from __future__ import annotations

import click

from lorahub import __version__
from lorahub.cli import _errors
from lorahub.cli.dev import dev_group
from lorahub.cli.inspect import inspect_command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="lorahub")
def cli() -> None:
    """lorahub: catalog, verify, convert, merge and train LoRA adapters for diffusion models.

    Set LORAHUB_DEBUG=1 to see tracebacks.
    """


cli.add_command(inspect_command)
cli.add_command(dev_group)


def main() -> None:
    _errors.run(lambda: cli.main(standalone_mode=False))
