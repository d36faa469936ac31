"""`lorahub inspect` as a user runs it: a real process, real files, exit codes and stderr."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lorahub.dev.example_lora import write_example_lora
from tests.support import REAL_FILES, real_file


def lorahub(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lorahub", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        check=False,
    )


JSON_FIELDS = {
    "format", "layer_kinds", "base_model", "components", "modules", "rank", "alpha", "dtypes",
    "hashes", "claims", "embeddings", "metadata", "problems",
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_json_report_on_real_files(name: str) -> None:
    result = lorahub("inspect", "--json", str(real_file(name)))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report.keys() >= JSON_FIELDS
    assert report["schema"] == "lorahub.inspect/v1"
    assert report["format"] == REAL_FILES[name]["format"]
    assert report["base_model"]["family"] == "sd1"
    assert report["base_model"]["evidence"]
    assert report["rank"]["counts"] == {"4": report["modules"]}
    expected = REAL_FILES[name]
    assert report["hashes"]["sha256"] == expected["sha256"]
    assert report["hashes"]["autov3"] == expected["autov3"]
    assert report["hashes"]["autov1"] == expected["autov1"]
    assert set(report["hashes"]) == {"sha256", "autov1", "autov2", "autov3", "blake3", "crc32", "content"}
    assert all(v == v.lower() for v in report["hashes"].values())


def test_human_report_on_a_generated_kohya_file(tmp_path: Path) -> None:
    path = tmp_path / "example.safetensors"
    write_example_lora(path, rank=8, alpha=4)
    result = lorahub("inspect", str(path))
    assert result.returncode == 0, result.stderr
    for expected in ("kohya", "sd1", "unet 192", "text_encoder 72", "sshs_model_hash", "match", "no problems found"):
        assert expected in result.stdout
    report = json.loads(lorahub("inspect", "--json", str(path)).stdout)
    assert report["alpha"]["counts"] == {"4": 264}
    assert report["metadata"]["kohya"]["ss_tag_frequency"] == {"10_example": {"example": 10, "pixel art": 7}}
    assert [c["status"] for c in report["claims"]] == ["match", "absent"]


@pytest.mark.parametrize(
    ("make", "code", "exit_code"),
    [
        (lambda p: p.write_bytes(b""), "file-empty", 4),
        (lambda p: p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}"), "file-truncated", 4),
        (lambda p: p.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{,,,}"), "header-not-json", 4),
        (lambda p: None, "path-not-found", 3),
        (lambda p: p.mkdir(), "not-a-file", 3),
    ],
)
def test_errors_have_code_hint_and_exit_code(tmp_path: Path, make: object, code: str, exit_code: int) -> None:
    path = tmp_path / "bad.safetensors"
    make(path)  # type: ignore[operator]
    result = lorahub("inspect", str(path))
    assert result.returncode == exit_code
    assert result.stderr.startswith(f"error[{code}]: ")
    assert "\nhint: " in result.stderr
    assert "Traceback" not in result.stderr
    debug = lorahub("inspect", str(path), env={"LORAHUB_DEBUG": "1"})
    assert "Traceback" in debug.stderr and debug.returncode == exit_code


class _Marker:
    """Unpickling this would create the marker file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


def test_dangerous_pickle_is_reported_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    payload = pickle.dumps({"state_dict": _Marker(marker)}, protocol=4)
    checkpoint = tmp_path / "evil.ckpt"
    with zipfile.ZipFile(checkpoint, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/version", "3\n")
    result = lorahub("inspect", str(checkpoint), cwd=tmp_path)
    assert result.returncode == 5
    assert "error[pickle-dangerous]" in result.stderr
    assert "system" in result.stderr
    assert not marker.exists()
    report = json.loads(lorahub("inspect", "--json", str(checkpoint)).stdout)
    assert report["problems"][0]["code"] == "pickle-dangerous"
    assert not marker.exists()


def test_unknown_command_is_a_usage_error() -> None:
    result = lorahub("no-such-command")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
