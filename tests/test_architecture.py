"""The package's shape: the import-linter contracts (layers, no cycles) hold, and no module reaches into another
module's underscore-prefixed names.

Why tests and not only ``make lint``: a refactor that breaks a layer or reaches for a private helper should fail
where every change is checked, with the offenders listed.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lorahub"


def _environment() -> dict[str, str]:
    """This checkout's ``lorahub`` first on the path, whatever is installed."""
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def test_import_linter_contracts_are_kept() -> None:
    pytest.importorskip("importlinter")
    run = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    result = subprocess.run(
        [sys.executable, "-c", run, "--no-cache"],
        cwd=ROOT,
        env=_environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_package_has_a_cycle_at_run_time() -> None:
    """Stricter than the acyclic contract, which must let sdk modules annotate with the Hub under TYPE_CHECKING:
    the imports that run (module level and inside functions alike) form no cycle in any package."""
    grimp = pytest.importorskip("grimp")
    import lorahub

    assert Path(lorahub.__file__).parent == PACKAGE  # this checkout is what gets analysed
    graph = grimp.build_graph("lorahub", cache_dir=None, exclude_type_checking_imports=True)
    packages = sorted(module for module in graph.modules if graph.find_children(module))
    cycles = {package: sorted(graph.nominate_cycle_breakers(package)) for package in packages}
    assert not {p: c for p, c in cycles.items() if c}, f"imports that close a cycle, by package: {cycles}"


# --- private names -------------------------------------------------------------------------------------------------


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _absolute(module: str, node: ast.ImportFrom, path: Path) -> str:
    """The module a ``from … import`` names, relative imports resolved against the importing module's package."""
    if not node.level:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _private_part(dotted: str) -> bool:
    return any(_private(part) for part in dotted.split("."))


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None


class _Offences:
    """Every place one module reaches into another's underscore-prefixed names."""

    def __init__(self, module: str, path: Path) -> None:
        self.module, self.path = module, path
        self.found: list[str] = []
        self.bound: dict[str, str] = {}
        """Local name → the lorahub module it is bound to."""

    def add(self, node: ast.AST, what: str) -> None:
        self.found.append(f"{self.path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}: {what}")

    def visit_import(self, node: ast.Import) -> None:
        for alias in node.names:
            if not alias.name.startswith("lorahub"):
                continue
            if _private_part(alias.name):
                self.add(node, f"import {alias.name}")
            if alias.asname:
                self.bound[alias.asname] = alias.name
            else:
                self.bound.setdefault("lorahub", "lorahub")

    def visit_import_from(self, node: ast.ImportFrom) -> None:
        source = _absolute(self.module, node, self.path)
        if not source.startswith("lorahub"):
            return
        if _private_part(source):
            self.add(node, f"from {source} import …")
        for alias in node.names:
            if _private(alias.name):
                self.add(node, f"from {source} import {alias.name}")
            elif f"{source}.{alias.name}" in MODULES:
                self.bound[alias.asname or alias.name] = f"{source}.{alias.name}"

    def visit_attribute(self, node: ast.Attribute) -> None:
        if not _private(node.attr):
            return
        dotted = _dotted(node.value)
        if dotted is None:
            return
        head, _, rest = dotted.partition(".")
        target = self.bound.get(head)
        if target is None:
            return
        full = f"{target}.{rest}" if rest else target
        if full in MODULES and full != self.module:
            self.add(node, f"{dotted}.{node.attr}")


def _offences(module: str, path: Path, code: str | None = None) -> list[str]:
    source = path.read_text(encoding="utf-8") if code is None else code
    tree = ast.parse(source, filename=str(path))
    offences = _Offences(module, path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            offences.visit_import(node)
        elif isinstance(node, ast.ImportFrom):
            offences.visit_import_from(node)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            offences.visit_attribute(node)
    return offences.found


def _all_offences() -> Iterator[str]:
    for module, path in MODULES.items():
        yield from _offences(module, path)


def test_no_module_imports_another_modules_private_names() -> None:
    offenders = list(_all_offences())
    assert not offenders, "give what is shared a public name in the right module:\n" + "\n".join(offenders)


def test_the_private_name_check_sees_every_form() -> None:
    """The checker itself: each form it must catch, and the forms it must let through."""
    code = (
        "from lorahub.adapters.delta import _flat, delta_weight\n"
        "from lorahub.signing import _time\n"
        "import lorahub.cli._output\n"
        "from . import convert\n"
        "from .sources import _read_peft_dir\n"
        "import lorahub.adapters.resize as resize\n"
        "from lorahub.errors import __name__ as name\n"
        "convert._compare\n"
        "resize._probe_scale\n"
        "lorahub.adapters.delta._flat\n"
        "delta_weight._cache\n"
        "self._private\n"
    )
    offences = _offences("lorahub.adapters.example", PACKAGE / "adapters" / "example.py", code)
    found = [line.partition(": ")[2] for line in offences]
    assert found == [
        "from lorahub.adapters.delta import _flat",
        "from lorahub.signing import _time",
        "import lorahub.cli._output",
        "from lorahub.adapters.sources import _read_peft_dir",
        "convert._compare",
        "resize._probe_scale",
        "lorahub.adapters.delta._flat",
    ]


# --- coded errors ----------------------------------------------------------------------------------------------------


def _raised_errors(path: Path) -> Iterator[tuple[str, str, bool]]:
    """(site, class name, whether a ``hint=`` is given) for each ``errors.X(…)`` / ``X(…)`` of an error class."""
    from lorahub import errors

    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = (_dotted(node.func) or "").removeprefix("errors.")
            cls = getattr(errors, name, None)
            if isinstance(cls, type) and issubclass(cls, errors.LorahubError):
                hinted = any(keyword.arg == "hint" for keyword in node.keywords)
                yield f"{path.relative_to(ROOT)}:{node.lineno}", name, hinted


def _error_sites() -> list[tuple[str, str, bool]]:
    paths = [path for path in sorted(PACKAGE.rglob("*.py")) if path != PACKAGE / "errors.py"]
    return [site for path in paths for site in _raised_errors(path)]


def test_every_raise_names_a_specific_error_class() -> None:
    """Scripts branch on ``error[CODE]`` and the exit code: each failure says which one it was."""
    bare = [site for site, name, _ in _error_sites() if name == "LorahubError"]
    assert not bare, "raise a specific error class (lorahub/errors.py) instead:\n" + "\n".join(bare)


def test_every_raise_comes_with_a_hint() -> None:
    """A hint tells the user what to do next: given at the raise, or the class's default."""
    from lorahub import errors

    unhinted = [
        f"{site} {name}"
        for site, name, hinted in _error_sites()
        if not hinted and getattr(errors, name).default_hint is None and name != "MissingExtraError"
    ]
    assert not unhinted, "give a hint= or a default_hint on the class:\n" + "\n".join(unhinted)
