"""`import lorahub`, `lorahub --help` and `lorahub inspect` stay free of torch and diffusers, and of the web
server's libraries (`lorahub serve` imports them when it runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REAL_FILES, real_file

HEAVY = ("torch", "diffusers", "peft", "transformers", "c2pa", "starlette", "uvicorn", "jinja2")

PROBE = """
import sys
{body}
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


def _heavy_modules_after(body: str, heavy: tuple[str, ...] = HEAVY) -> list[str]:
    code = PROBE.format(body=body, heavy=heavy)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = next(line for line in result.stdout.splitlines() if line.startswith("HEAVY="))
    return [name for name in line.removeprefix("HEAVY=").split(",") if name]


def test_import_lorahub_is_light() -> None:
    assert _heavy_modules_after("import lorahub; lorahub.__version__") == []


def test_help_is_light() -> None:
    body = "from lorahub.cli import cli\ncli.main(['--help'], standalone_mode=False)"
    assert _heavy_modules_after(body) == []


@pytest.mark.parametrize("name", sorted(REAL_FILES)[:1])
def test_inspect_needs_no_torch(name: str) -> None:
    path = real_file(name)
    body = f"import lorahub\nreport = lorahub.inspect({str(path)!r})\nassert report.modules > 0"
    assert _heavy_modules_after(body) == []


def test_public_surface_is_sorted_and_resolves() -> None:
    import lorahub

    assert lorahub.__all__ == sorted(lorahub.__all__)
    for name in lorahub.__all__:
        assert getattr(lorahub, name) is not None
    assert Path(lorahub.__file__).name == "__init__.py"


def test_add_and_verify_need_no_torch(tmp_path: Path) -> None:
    path = real_file(sorted(REAL_FILES)[0])
    body = (
        "from lorahub import Hub\n"
        f"hub = Hub.open({str(tmp_path / 'home')!r})\n"
        "hub.create_identity('Probe <probe@example.com>')\n"
        f"result = hub.add({str(path)!r})\n"
        "assert hub.verify(result.name).ok"
    )
    assert _heavy_modules_after(body) == []


def test_opening_a_home_at_the_newest_schema_imports_neither_alembic_nor_numpy(tmp_path: Path) -> None:
    """Every command opens the catalog; these two cost half of a command's start and are needed only to migrate
    and to scan tensor values."""
    body = f"from lorahub import Hub\nHub.open({str(tmp_path)!r}).catalog.engine.dispose()"
    subprocess.run([sys.executable, "-c", body], check=True)  # the first open migrates
    assert _heavy_modules_after(f"{body}\nHub.open({str(tmp_path)!r}).list_versions()", ("alembic", "numpy")) == []


def test_torch_libraries_load_without_torchaos_warnings() -> None:
    """torchao (installed with the ``quantize`` extra) is imported by peft and diffusers; its warnings about CUDA
    kernels a CPU machine lacks must not reach every command's output."""
    pytest.importorskip("torchao")
    code = "import lorahub, peft, diffusers.models, diffusers.quantizers.torchao.torchao_quantizer"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "torchao" not in result.stderr and "register_constant" not in result.stderr, result.stderr
