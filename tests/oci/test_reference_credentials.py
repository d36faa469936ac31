"""OCI references are parsed by the distribution spec's grammar; registry credentials are found where `docker login`,
podman and credential helpers keep them."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from lorahub import errors
from lorahub.oci.credentials import Credentials, credentials_for
from lorahub.oci.reference import OciReference, parse_oci_reference


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("oci://127.0.0.1:5000/loras/pixel", OciReference("127.0.0.1:5000", "loras/pixel")),
        ("oci://ghcr.io/studio/sd15/pixel:v3", OciReference("ghcr.io", "studio/sd15/pixel", tag="v3")),
        ("oci://[::1]:5000/a:latest", OciReference("[::1]:5000", "a", tag="latest")),
        (
            "oci://localhost/a-b_c.d/e@sha256:" + "ab" * 32,
            OciReference("localhost", "a-b_c.d/e", digest="sha256:" + "ab" * 32),
        ),
    ],
)
def test_references_parse(text: str, expected: OciReference) -> None:
    parsed = parse_oci_reference(text)
    assert parsed == expected and str(parsed) == text


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("docker://host/a", "does not start with oci://"),
        ("oci://host", "no repository"),
        ("oci://host/Pixel", "lowercase"),
        ("oci://host/a:-bad", "tag"),
        ("oci://host/a@sha256:ABC", "64 lowercase hex"),
        ("oci://ho st/a", "host name"),
    ],
)
def test_bad_references_say_which_rule_they_break(text: str, why: str) -> None:
    with pytest.raises(errors.InvalidArgumentError, match=why) as raised:
        parse_oci_reference(text)
    assert raised.value.hint and "oci://HOST" in raised.value.hint


def test_loopback_is_recognised_by_address_not_by_name_alone() -> None:
    loopback = ["127.0.0.1:5000", "127.8.0.1", "[::1]:5000", "localhost:5917"]
    assert all(OciReference(r, "a").is_loopback for r in loopback)
    assert not any(OciReference(r, "a").is_loopback for r in ("10.0.0.1:5000", "localhost.example.com", "ghcr.io"))


def _docker_config(folder: Path, config: dict[str, object]) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return {"DOCKER_CONFIG": str(folder)}


def test_docker_config_auths_in_every_spelling(tmp_path: Path) -> None:
    auth = base64.b64encode(b"alice:s3cret:with-colon").decode()
    for key in ("registry.example.com:5000", "https://registry.example.com:5000"):
        env = _docker_config(tmp_path / key.replace("/", "_"), {"auths": {key: {"auth": auth}}})
        assert credentials_for("registry.example.com:5000", env) == Credentials("alice", "s3cret:with-colon")
        assert credentials_for("other.example.com", env) is None
    hub = _docker_config(tmp_path / "hub", {"auths": {"https://index.docker.io/v1/": {"auth": auth}}})
    assert credentials_for("docker.io", hub) == Credentials("alice", "s3cret:with-colon")


def test_environment_first_then_the_auth_file_then_docker(tmp_path: Path) -> None:
    podman = tmp_path / "auth.json"
    podman.write_text(json.dumps({"auths": {"r.example": {"auth": base64.b64encode(b"pod:man").decode()}}}))
    docker = _docker_config(tmp_path / "docker", {"auths": {"r.example": {"auth": base64.b64encode(b"d:k").decode()}}})
    env = {**docker, "REGISTRY_AUTH_FILE": str(podman)}
    assert credentials_for("r.example", env) == Credentials("pod", "man")
    env |= {"LORAHUB_REGISTRY_USERNAME": "ci", "LORAHUB_REGISTRY_PASSWORD": "token"}
    assert credentials_for("r.example", env) == Credentials("ci", "token")
    assert "token" not in repr(credentials_for("r.example", env))


def test_a_credential_helper_is_asked_by_its_protocol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real helper program on PATH, as docker-credential-pass or -secretservice would be."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-lorahubtest"
    helper.write_text(
        "#!/bin/sh\nread host\n"
        'if [ "$1" = get ] && [ "$host" = helped.example ]; then\n'
        '  echo \'{"ServerURL":"helped.example","Username":"helper-user","Secret":"helper-secret"}\'\n'
        "else\n  echo 'credentials not found in native keychain'; exit 1\nfi\n"
    )
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    env = _docker_config(tmp_path / "docker", {"credHelpers": {"helped.example": "lorahubtest"}})
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert credentials_for("helped.example", env) == Credentials("helper-user", "helper-secret")
    assert credentials_for("unhelped.example", env) is None
    store = _docker_config(tmp_path / "store", {"credsStore": "lorahubtest"})
    assert credentials_for("helped.example", store) == Credentials("helper-user", "helper-secret")


def test_a_damaged_docker_config_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(errors.SettingsError, match=r"config\.json"):
        credentials_for("r.example", {"DOCKER_CONFIG": str(tmp_path)})
    env = _docker_config(tmp_path / "bad", {"auths": {"r.example": {"auth": "***"}}})
    with pytest.raises(errors.SettingsError, match="base64"):
        credentials_for("r.example", env)
