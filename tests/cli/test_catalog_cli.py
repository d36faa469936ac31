"""The catalog as a user drives it: real processes, a real home, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lorahub.dev.example_lora import write_example_lora
from tests.support import postgres_unavailable

POSTGRES_URL = os.environ.get("LORAHUB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
EXIT_VERIFY_FAILED = 7


class Home:
    """One lorahub home driven through the real CLI."""

    def __init__(self, root: Path, database_url: str | None = None) -> None:
        self.root = root
        self.env = {**os.environ, "LORAHUB_HOME": str(root)}
        self.env.pop("LORAHUB_DATABASE_URL", None)
        if database_url:
            self.env["LORAHUB_DATABASE_URL"] = database_url

    def run(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "lorahub", *args],
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"lorahub {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    def json(self, *args: str) -> object:
        return json.loads(self.run(*args, "--json").stdout)


def _postgres_schema() -> Iterator[str]:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(POSTGRES_URL)
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    except sqlalchemy.exc.OperationalError:
        postgres_unavailable(f"PostgreSQL is not reachable at {POSTGRES_URL}")
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def home(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Home]:
    if request.param == "sqlite":
        yield Home(tmp_path / "home")
        return
    for url in _postgres_schema():
        yield Home(tmp_path / "home", url)


@pytest.fixture
def sqlite_home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home")


def _adapter(tmp_path: Path, name: str, seed: int = 0) -> Path:
    path = tmp_path / f"{name}.safetensors"
    write_example_lora(path, rank=1, seed=seed, name=name)
    return path


def test_add_verify_list_show_audit(home: Home, tmp_path: Path) -> None:
    home.run("keys", "create", "Alice <alice@studio.example>")
    path = _adapter(tmp_path, "pixel-art")
    added = home.json("add", str(path), "--license", "LicenseRef-CreativeML-OpenRAIL-M", "--tag", "pixel")
    assert added["name"] == "pixel-art" and added["version"] == 1
    assert home.json("verify", "pixel-art")["ok"] is True
    assert home.json("verify", str(path))["ok"] is True
    again = _adapter(tmp_path, "pixel-art-2", seed=1)
    assert home.json("add", str(again), "--name", "pixel-art")["version"] == 2
    listed = home.json("list")
    assert [(v["name"], v["version"]) for v in listed] == [("pixel-art", 2), ("pixel-art", 1)]  # type: ignore[union-attr]
    assert [v["name"] for v in home.json("search", "pixel")] == ["pixel-art", "pixel-art"]  # type: ignore[union-attr]
    shown = home.json("show", "pixel-art@1")
    assert shown["card"]["license"]["id"] == "LicenseRef-CreativeML-OpenRAIL-M"  # type: ignore[index]
    assert shown["signatures"][0]["trust"] == "own"  # type: ignore[index]
    actions = [e["action"] for e in home.json("audit")]  # type: ignore[union-attr]
    assert actions.count("add") == 2
    assert home.json("audit", "--verify")["ok"] is True
    duplicate = home.run("add", str(path), "--name", "copy", check=False)
    assert duplicate.returncode != 0 and "error[duplicate-content]" in duplicate.stderr


def test_eight_processes_add_into_one_home(home: Home, tmp_path: Path) -> None:
    home.run("keys", "create", "Alice <alice@studio.example>")
    files = [_adapter(tmp_path, f"lora-{i}", seed=i) for i in range(8)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "lorahub", "add", str(f), "--json"],
            env=home.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for f in files
    ]
    outcomes = [p.communicate(timeout=240) for p in processes]
    assert all(p.returncode == 0 for p in processes), [err for _, err in outcomes]
    listed = home.json("list")
    assert sorted(v["name"] for v in listed) == sorted(f"lora-{i}" for i in range(8))  # type: ignore[union-attr]
    blobs = [p for p in (home.root / "blobs").rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert len(blobs) == 8
    events = home.json("audit", "--action", "add")
    assert len(events) == 8  # type: ignore[arg-type]
    assert home.json("audit", "--verify")["ok"] is True


def test_kill_during_add_leaves_nothing_behind(sqlite_home: Home, tmp_path: Path) -> None:
    sqlite_home.run("keys", "create", "Alice <alice@studio.example>")
    big = tmp_path / "big.safetensors"
    write_example_lora(big, rank=256, name="big")  # ~300 MB: long enough to be killed mid-copy
    process = subprocess.Popen(
        [sys.executable, "-m", "lorahub", "add", str(big)], env=sqlite_home.env, stderr=subprocess.DEVNULL
    )
    blobs = sqlite_home.root / "blobs"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(p.name.startswith(".tmp") for p in blobs.rglob("*")):
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = [p for p in blobs.rglob("*") if p.is_file() and not p.name.startswith(".tmp")]
    assert finished == []
    assert sqlite_home.json("list") == []
    sqlite_home.run("add", str(big))
    assert [v["name"] for v in sqlite_home.json("list")] == ["big"]  # type: ignore[union-attr]
    sqlite_home.run("gc")
    assert not any(p.name.startswith(".tmp") for p in blobs.rglob("*"))


def _failed_checks(home: Home, *args: str) -> set[str]:
    result = home.run("verify", *args, "--json", check=False)
    assert result.returncode == EXIT_VERIFY_FAILED, result.stderr
    return {c["name"] for c in json.loads(result.stdout)["checks"] if not c["ok"]}


def test_tampering_is_caught_by_a_named_check(sqlite_home: Home, tmp_path: Path) -> None:
    home = sqlite_home
    home.run("keys", "create", "Alice <alice@studio.example>")
    first, second = _adapter(tmp_path, "first"), _adapter(tmp_path, "second", seed=1)
    home.run("add", str(first), "--embed")
    home.run("add", str(second), "--embed")
    assert home.json("verify", str(first))["ok"] is True

    sha256 = home.json("show", "first")["sha256"]  # type: ignore[index]
    blob = home.root / "blobs" / "sha256" / sha256[:2] / sha256
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[-10] ^= 0xFF
    blob.write_bytes(bytes(data))
    assert {"blob integrity", "card matches file"} <= _failed_checks(home, "first")

    edited = tmp_path / "edited.safetensors"
    card_name = b'\\"name\\":\\"first\\"'  # inside the header, the card is a JSON string in JSON
    assert card_name in first.read_bytes()
    edited.write_bytes(first.read_bytes().replace(card_name, card_name.replace(b"first", b"firsx")))
    assert "signatures valid" in _failed_checks(home, str(edited))

    from safetensors.numpy import load_file, save_file

    from lorahub.files.safetensors import read_header

    moved = tmp_path / "moved.safetensors"  # the first file's signed card, copied by hand onto the second's tensors
    stolen = {k: v for k, v in read_header(first).metadata.items() if k.startswith("lorahub.")}
    save_file(load_file(str(second)), str(moved), {**read_header(second).metadata, **stolen})
    assert "card matches file" in _failed_checks(home, str(moved))

    stranger = Home(tmp_path / "stranger")
    stranger.run("keys", "create", "Mallory <mallory@example.com>")
    resigned = _adapter(tmp_path, "resigned", seed=7)
    stranger.run("add", str(resigned), "--embed")
    assert "signer trusted" in _failed_checks(home, str(resigned))
    pem = tmp_path / "mallory.pem"
    pem.write_text(stranger.run("keys", "export", "Mallory").stdout)
    home.run("trust", "add", str(pem), "--name", "Mallory")
    assert home.json("verify", str(resigned))["ok"] is True
    fingerprint = stranger.json("keys", "list")[0]["fingerprint"]  # type: ignore[index]
    home.run("trust", "revoke", fingerprint[:12])
    assert "signer trusted" in _failed_checks(home, str(resigned))


def test_key_files_are_private_and_passphrases_are_checked(sqlite_home: Home, tmp_path: Path) -> None:
    home = sqlite_home
    home.run("keys", "create", "Bob <bob@example.com>", "--passphrase-env", "SECRET", env={"SECRET": "correct horse"})
    for key_file in (home.root / "keys").glob("*.key.pem"):
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    path = _adapter(tmp_path, "locked")
    wrong = home.run("add", str(path), check=False, env={"LORAHUB_PASSPHRASE": "wrong"})
    assert wrong.returncode != 0 and "error[key-passphrase]" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    home.run("add", str(path), env={"LORAHUB_PASSPHRASE": "correct horse"})
    assert home.json("verify", "locked")["ok"] is True


def test_a_verify_failure_with_a_locked_key_is_audited_unsigned(sqlite_home: Home, tmp_path: Path) -> None:
    home = sqlite_home
    home.run("keys", "create", "Bob <bob@example.com>", "--passphrase-env", "SECRET", env={"SECRET": "correct horse"})
    locked = {"LORAHUB_PASSPHRASE": ""}
    failed = home.run("verify", str(_adapter(tmp_path, "stray")), check=False, env=locked)
    assert failed.returncode == EXIT_VERIFY_FAILED
    checked = json.loads(home.run("audit", "--verify", "--json", env=locked).stdout)
    assert checked["ok"] is True and [e["action"] for e in checked["unsigned"]] == ["verify-failed"]
    text = home.run("audit", "--verify", env=locked).stdout
    assert "verify-failed is unsigned: the key of Bob <bob@example.com> is encrypted" in text
    assert "audit chain intact" in text
    listed = home.run("audit", env=locked).stdout.splitlines()
    assert [line.endswith("(unsigned)") for line in listed if "verify-failed" in line] == [True]


def test_fresh_home_commands_need_no_init(sqlite_home: Home, tmp_path: Path) -> None:
    assert sqlite_home.json("list") == []
    assert sqlite_home.json("config", "show")["home"] == str(sqlite_home.root)  # type: ignore[index]
    result = sqlite_home.run("add", str(_adapter(tmp_path, "x")), check=False)
    assert "error[key-not-found]" in result.stderr and "keys create" in result.stderr


def test_add_url_from_a_local_server(sqlite_home: Home, tmp_path: Path) -> None:
    import hashlib
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    write_example_lora(served / "remote-style.safetensors", rank=1, name="remote-style")
    sha256 = hashlib.sha256((served / "remote-style.safetensors").read_bytes()).hexdigest()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(served), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/remote-style.safetensors"
    try:
        sqlite_home.run("keys", "create", "Alice <alice@studio.example>")
        refused = sqlite_home.run("add", url, check=False)
        assert "error[download-failed]" in refused.stderr and "--allow-http" in refused.stderr
        wrong = sqlite_home.run("add", url, "--allow-http", "--sha256", "0" * 64, check=False)
        assert "error[hash-mismatch]" in wrong.stderr
        added = sqlite_home.json("add", url, "--allow-http", "--sha256", sha256.upper())
        assert added["name"] == "remote-style" and added["sha256"] == sha256  # type: ignore[index]
        assert sqlite_home.json("verify", "remote-style")["ok"] is True  # type: ignore[index]
        assert list((sqlite_home.root / "downloads").glob("*.safetensors")) == []
    finally:
        server.shutdown()


def test_cosign_export_remove_and_gc(sqlite_home: Home, tmp_path: Path) -> None:
    home = sqlite_home
    home.run("keys", "create", "Trainer <trainer@example.com>")
    home.run("keys", "create", "Curator <curator@example.com>")
    path = _adapter(tmp_path, "portable")
    home.run("add", str(path), "--license", "MIT")
    home.run("sign", "portable", "--key", "Curator")
    signatures = home.json("show", "portable")["signatures"]  # type: ignore[index]
    assert sorted(s["name"] for s in signatures) == ["Curator <curator@example.com>", "Trainer <trainer@example.com>"]
    assert all(s["valid"] for s in signatures)
    assert "already signed" in home.run("sign", "portable", "--key", "Curator").stdout

    exported = tmp_path / "exported.safetensors"
    home.run("export", "portable", str(exported))
    elsewhere = Home(tmp_path / "elsewhere")  # verifiable without the registry, once the signer is trusted
    elsewhere.run("keys", "create", "Someone <someone@example.com>")
    assert "signer trusted" in _failed_checks(elsewhere, str(exported))
    pem = tmp_path / "curator.pem"
    pem.write_text(home.run("keys", "export", "Curator").stdout)
    elsewhere.run("trust", "add", str(pem))
    assert elsewhere.json("verify", str(exported))["ok"] is True

    home.run("rm", "portable")
    assert home.json("list") == []
    assert len(home.json("list", "--removed")) == 1  # type: ignore[arg-type]
    assert "catalogue" in _failed_checks(home, str(exported))  # catalogued, but removed
    assert "removed 1 blob(s)" in home.run("gc").stdout
    actions = [e["action"] for e in home.json("audit", "--adapter", "portable")]  # type: ignore[union-attr]
    assert actions == ["add", "sign", "export", "remove", "verify-failed"]
    assert home.json("audit", "--verify")["ok"] is True
