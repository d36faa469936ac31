"""Helpers of the PostgreSQL team tests: the GRANTs docs/team.md gives, and what each member process runs."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

from lorahub import Hub, errors
from lorahub.sdk.adding import AddOptions

DOC = Path(__file__).parents[2] / "docs" / "team.md"


def documented_grants(*, database: str, schema: str, names: dict[str, str]) -> list[str]:
    """The statements of docs/team.md's ```sql block, for ``database`` and ``schema`` instead of the page's
    ``lorahub`` and ``public``, and with each role renamed as ``names`` says (roles are cluster-wide: a test uses
    names of its own)."""
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"```sql\n(.*?)```", text, re.S)
    assert block is not None, "docs/team.md has no sql block"
    sql = block.group(1)
    sql = re.sub(r"\bDATABASE lorahub\b", f"DATABASE {database}", sql)
    sql = re.sub(r"\bSCHEMA public\b", f"SCHEMA {schema}", sql)
    for old, new in names.items():
        sql = re.sub(rf"\b{old}\b", new, sql)
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [statement.strip() for statement in "\n".join(lines).split(";") if statement.strip()]


def member_work(home: str, plan: dict[str, Any], barrier: Any) -> dict[str, int]:
    """One member, in its own process. Once all are up: add the files under its own names, and after each add, with
    ``plan["sign"]`` (a curator) sign the others' versions it has not signed yet; try to remove every other one of
    its own (a contributor is refused); with ``plan["gc"]`` (an admin) collect garbage. Once all have added, each
    signer signs what it has not signed yet. Returns its counts."""
    hub = Hub.open(home)
    done = {"added": 0, "signed": 0, "removed": 0, "refused": 0, "collected": 0}
    barrier.wait(120)
    for index, path in enumerate(plan["files"]):
        hub.add(path, AddOptions(name=f"{plan['prefix']}-{index}", license="MIT", allow_duplicate=True))
        done["added"] += 1
        if plan["sign"]:
            done["signed"] += _sign_others(hub, plan["prefix"])
        if index % 2:
            try:
                hub.remove(f"{plan['prefix']}-{index}")
                done["removed"] += 1
            except errors.RoleRequiredError:
                done["refused"] += 1
        if plan["gc"]:
            done["collected"] += hub.gc()[0]
    barrier.wait(120)
    if plan["sign"]:
        done["signed"] += _sign_others(hub, plan["prefix"])
    hub.catalog.engine.dispose()
    return done


def _sign_others(hub: Hub, prefix: str) -> int:
    mine = hub.signer().keyid
    signed = 0
    for version in hub.list_versions():
        if not version.name.startswith(prefix) and mine not in {s.keyid for s in version.signatures}:
            # another curator may remove it between the listing and the signature: the catalogue settles that race
            with contextlib.suppress(errors.AdapterNotFoundError):
                signed += int(hub.sign(version.ref)[1])
    return signed
