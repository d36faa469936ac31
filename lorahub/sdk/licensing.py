"""The licence gate that load, merge, bake and generate pass before they touch a tensor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lorahub import errors

if TYPE_CHECKING:
    from lorahub.licenses import Verdict
    from lorahub.sdk.hub import Hub


def _reasons(verdict: Verdict) -> str:
    return "; ".join(f"{r.text} ({r.license} {r.clause})" for r in verdict.reasons[:3])


SEVERITY = {"allowed": 0, "allowed-with-obligations": 1, "uncertain": 2, "forbidden": 3}


def _worse(a: Verdict, b: Verdict) -> Verdict:
    return b if SEVERITY.get(b.verdict, 3) > SEVERITY.get(a.verdict, 3) else a


def require_license(
    hub: Hub,
    refs: Sequence[str],
    *,
    use: str | None = None,
    merge: bool = False,
    base_license: str | None = None,
    subject: str = "outputs",
    accept_uncertain: bool = False,
    action: str,
) -> Verdict:
    """Ask the licence engine; a forbidden answer raises, an uncertain one raises unless ``accept_uncertain``, in
    which case the acceptance is recorded in the audit log (who accepted what, for which action and use).

    ``merge`` asks whether the adapters may be combined into one file (merge, bake); with ``use`` as well, the
    worse of the two answers counts. ``subject`` is what the use is about: generated ``outputs`` or the ``model``.
    """
    if merge:
        verdict = hub.license_check(list(refs), merge=True, base_license=base_license)
        if use is not None:
            used = hub.license_check(list(refs), use=use, base_license=base_license, subject=subject)
            verdict = _worse(verdict, used)
    else:
        verdict = hub.license_check(list(refs), use=use, base_license=base_license, subject=subject)
    what = f"{action} of {', '.join(refs)}" + (f" for {use} use" if use else "")
    if verdict.verdict == "forbidden":
        raise errors.LicenseForbiddenError(f"the licences forbid the {what}: {_reasons(verdict)}")
    if verdict.verdict == "uncertain":
        if not accept_uncertain:
            raise errors.LicenseUncertainError(
                f"the licence answer for the {what} is uncertain: {_reasons(verdict)}",
                hint="Read the reasons (lorahub license check); pass --accept-uncertain (accept_uncertain=True) to "
                "go ahead on your own judgement: the acceptance is recorded in the audit log.",
            )
        hub.catalog.log(
            "license-override",
            audit=hub.audit_actor(),
            details={"action": action, "refs": list(refs), "use": use, "verdict": verdict.as_dict()},
        )
    return verdict
