"""Output sinks: data on stdout, chatter and errors on stderr; ``--json`` prints one JSON document."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

stdout = Console(soft_wrap=False, highlight=False)
stderr = Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
