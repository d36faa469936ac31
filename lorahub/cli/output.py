"""Output sinks: data on stdout, chatter and errors on stderr; ``--json`` prints one JSON document."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

PIPE_WIDTH = 120
"""Width when stdout is not a terminal: wide enough that a 64-hex hash stays on one line for copying."""

# emoji=False: metadata keys such as cloneofsimo's ``unet:100:rank`` must not become pictures.
stdout = Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else PIPE_WIDTH)
stderr = Console(stderr=True, highlight=False, emoji=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
