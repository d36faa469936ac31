"""The default of keyword arguments for which ``None`` is already a value.

``hub.provenance_settings(tsa_url=None)`` removes the URL and ``lorahub.train(alpha=None)`` asks for alpha = rank,
so "left out" needs a value of its own: :data:`UNSET`. A one-member enum, so that type checkers narrow it away
after ``is not UNSET``.
"""

from __future__ import annotations

import enum
from typing import Final


class Unset(enum.Enum):
    """The type of a keyword argument's default meaning "left out: keep what is there".

    Leave such an argument out rather than passing this; a wrapper that forwards its own arguments passes
    ``Unset.UNSET`` to say "left out" too.
    """

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset.UNSET


def given(**values: object) -> dict[str, object]:
    """The keyword arguments a caller gave: every value but :data:`UNSET`."""
    return {name: value for name, value in values.items() if value is not UNSET}
