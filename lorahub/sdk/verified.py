"""An adapter that passed verification, as loading hands it on: the record both the loader
(:mod:`lorahub.sdk.loading`) and the pipeline side (:mod:`lorahub.sdk.pipelines`, whose handles hold one) need,
in a module of its own so that neither has to import the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lorahub.adapters.model import CanonicalAdapter
    from lorahub.registry.catalog import AdapterVersion
    from lorahub.sdk.verifying import VerifyReport
    from lorahub.signing.card import Card
    from lorahub.signing.signed import SignedCard

__all__ = ["VerifiedAdapter"]


@dataclass
class VerifiedAdapter:
    """An adapter that passed verification (or was loaded with ``verify=False``, then ``report`` is None): its
    catalogue entry if any, its signed card if any, and its tensors in the canonical model."""

    ref: str
    path: Path
    content_digest: str
    version: AdapterVersion | None = None
    signed: SignedCard | None = None
    report: VerifyReport | None = None
    _adapter: CanonicalAdapter | None = None
    _stored: CanonicalAdapter | None = None

    @property
    def adapter(self) -> CanonicalAdapter:
        """The tensors (widened to float32, the canonical model), read on first use: a pipeline that already holds
        this content needs only the checks."""
        if self._adapter is None:
            from lorahub.adapters.model import read_adapter

            self._adapter = read_adapter(self.path)
        return self._adapter

    @adapter.setter
    def adapter(self, value: CanonicalAdapter) -> None:
        self._adapter, self._stored = value, None

    @property
    def stored(self) -> CanonicalAdapter:
        """The tensors as a pipeline takes them, read on first use: float16 kept as the file stores it
        (``read_adapter(widen=False)``: the same values, and the pipeline converts once, to its own dtype), or
        :attr:`adapter` when that was read already."""
        if self._stored is None:
            from lorahub.adapters.model import read_adapter

            self._stored = self._adapter or read_adapter(self.path, widen=False)
        return self._stored

    @stored.setter
    def stored(self, value: CanonicalAdapter) -> None:
        self._stored = value

    @property
    def card(self) -> Card | None:
        return self.signed.card if self.signed is not None else None

    @property
    def label(self) -> str:
        return self.version.ref if self.version is not None else self.path.name

    @property
    def trigger_words(self) -> tuple[str, ...]:
        return self.card.trigger_words if self.card is not None else ()
