"""The CLI's lazily opened Hub: `lorahub --help` must not open a database or import the registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from lorahub.sdk.hub import Hub


@dataclass
class HubContext:
    home: Path | None = None
    _hub: Hub | None = field(default=None, repr=False)

    @property
    def hub(self) -> Hub:
        if self._hub is None:
            from lorahub.sdk.hub import Hub

            self._hub = Hub.open(self.home)
        return self._hub


pass_hub_context = click.make_pass_decorator(HubContext, ensure=True)


def json_option(help_text: str = "Print the result as JSON.") -> click.Option:
    return click.option("--json", "as_json", is_flag=True, help=help_text)  # type: ignore[return-value]
