"""The pinned set that `make setup` installs (requirements/lock.txt) agrees with the ranges pyproject.toml declares.

A dependency added to pyproject.toml without re-locking would be missing from a fresh set-up (pip installs the lock
with ``--no-deps``), and a range narrowed past the locked version would make the tested set one users cannot get.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;\\]+)", re.MULTILINE)


def locked() -> dict[str, Version]:
    return {canonicalize_name(name): Version(version) for name, version in PIN.findall(LOCK.read_text())}


CUDA_ONLY_EXTRAS = frozenset({"quantize-nf4"})
"""Extras that only run on a CUDA GPU (bitsandbytes): the lock is the set tested on the project's CPU machines."""


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(text) for text in project["dependencies"]]
    for name, extra in project["optional-dependencies"].items():
        if name not in CUDA_ONLY_EXTRAS:
            requirements += [Requirement(text) for text in extra if not text.startswith("lorahub")]
    return requirements


def torch_spec() -> Version:
    match = re.search(r"^TORCH_SPEC \?= torch==(\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, "the Makefile pins torch with TORCH_SPEC ?= torch==VERSION"
    return Version(match.group(1))


def test_every_declared_dependency_is_locked_inside_its_range() -> None:
    versions = locked() | {"torch": torch_spec()}
    problems = []
    for requirement in declared():
        version = versions.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"{requirement.name} is not in requirements/lock.txt")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement.name}=={version} is outside {requirement.specifier}")
    assert not problems, "; ".join(problems) + " (run `make lock` after `pip install` of the new set)"


def test_every_locked_package_is_hash_pinned() -> None:
    blocks = re.split(r"\n(?=\S)", LOCK.read_text().split("\n", 1)[1].strip())
    unhashed = [block.split()[0] for block in blocks if "--hash=sha256:" not in block]
    assert not unhashed, f"pinned without a hash: {unhashed}"
    assert "torch" not in locked(), "torch is installed from TORCH_SPEC (CPU and CUDA wheels differ)"
