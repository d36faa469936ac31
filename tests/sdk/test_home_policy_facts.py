"""Settings precedence, policy files, and what a file's neighbours say about its card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorahub import errors
from lorahub.sdk.card_facts import suggest, trigger_candidates
from lorahub.sdk.home import Settings, default_home, mask_url
from lorahub.sdk.policy import DEFAULT_POLICY_TOML, Policy


def test_settings_precedence(tmp_path: Path) -> None:
    env = {"LORAHUB_HOME": str(tmp_path / "env-home"), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    assert Settings.resolve(tmp_path / "arg", env).home == tmp_path / "arg"
    from_env = Settings.resolve(None, env)
    assert from_env.home == tmp_path / "env-home" and from_env.sources["home"] == "environment"
    assert from_env.database_url == f"sqlite:///{tmp_path / 'env-home' / 'catalog.db'}"
    assert default_home({"XDG_DATA_HOME": str(tmp_path / "xdg")}) == tmp_path / "xdg" / "lorahub"
    (tmp_path / "env-home").mkdir()
    (tmp_path / "env-home" / "config.toml").write_text('database_url = "postgresql://u:secret@db/x"\n')
    configured = Settings.resolve(None, env)
    assert (
        configured.database_url == "postgresql://u:secret@db/x" and configured.sources["database_url"] == "config.toml"
    )
    overridden = Settings.resolve(None, {**env, "LORAHUB_DATABASE_URL": "sqlite:///other.db"})
    assert overridden.database_url == "sqlite:///other.db"
    assert mask_url("postgresql+psycopg://u:secret@db:5432/x") == "postgresql+psycopg://u:***@db:5432/x"
    (tmp_path / "env-home" / "config.toml").write_text("database_url = [unclosed\n")
    with pytest.raises(errors.SettingsError):
        Settings.resolve(None, env)


def test_default_policy_parses_and_bad_policies_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(DEFAULT_POLICY_TOML)
    policy = Policy.load(path)
    assert policy.require_signature and policy.max_unknown_keys == 0 and policy.source == str(path)
    for text, fragment in [
        ("require_signatures = true\n", "unknown setting"),
        ('max_unknown_keys = "3"\n', "must be a int"),
        ("forbidden_licenses = [1]\n", "must be a list"),
        ("require_license = \n", "Invalid value"),
    ]:
        path.write_text(text)
        with pytest.raises(errors.PolicyError, match=fragment):
            Policy.load(path)
    with pytest.raises(errors.PolicyError, match="no such policy"):
        Policy.load(tmp_path / "missing.toml")


def test_neighbours_fill_the_card_in_order_of_reliability(tmp_path: Path) -> None:
    adapter = tmp_path / "pixel_art_v2.safetensors"
    adapter.write_bytes(b"")
    metadata = {
        "ss_output_name": "PixelArt v2",
        "ss_tag_frequency": json.dumps({"10_pxl": {"pixel art": 30, "1girl": 12, "sprite": 9, "rare": 1}}),
        "ss_new_sd_model_hash": "AB" * 32,
        "modelspec.license": "creativeml-openrail-m",
    }
    from_metadata = suggest(adapter, metadata)
    assert from_metadata.name == "pixelart-v2"
    assert from_metadata.trigger_words == ["pxl", "pixel art", "1girl", "sprite"]
    assert from_metadata.base_weights_digest == "ab" * 32
    assert from_metadata.license == "creativeml-openrail-m"

    (tmp_path / "pixel_art_v2.json").write_text(json.dumps({"activation text": "pxlart, pixel style", "notes": "A1"}))
    with_a1111 = suggest(adapter, metadata)
    assert with_a1111.trigger_words == ["pxlart", "pixel style"]
    assert with_a1111.sources["trigger_words"].endswith("(A1111)")

    civitai = {"trainedWords": ["pxl_civitai"], "model": {"name": "Pixel Art XL"}, "baseModel": "SDXL 1.0"}
    (tmp_path / "pixel_art_v2.civitai.info").write_text(json.dumps(civitai))
    with_civitai = suggest(adapter, metadata)
    assert with_civitai.trigger_words == ["pxl_civitai"]
    assert with_civitai.name == "pixel-art-xl"
    assert with_civitai.base_model_name == "SDXL 1.0"

    (tmp_path / "pixel_art_v2.civitai.info").write_text("{not json")
    assert suggest(adapter, metadata).trigger_words == ["pxlart", "pixel style"]  # a broken neighbour is ignored


def test_neighbours_are_those_of_the_whole_name_before_the_last_suffix(tmp_path: Path) -> None:
    """``style.v2.safetensors`` reads ``style.v2.*`` (as A1111 does), never ``style.json`` of an adapter ``style``."""
    adapter = tmp_path / "style.v2.safetensors"
    adapter.write_bytes(b"")
    (tmp_path / "style.json").write_text(json.dumps({"activation text": "not mine"}))
    assert suggest(adapter, {}).trigger_words == []
    (tmp_path / "style.v2.CIVITAI.INFO").write_text(json.dumps({"trainedWords": ["mine"]}))
    found = suggest(adapter, {})
    assert found.trigger_words == ["mine"] and found.sources["trigger_words"] == "style.v2.CIVITAI.INFO"


def test_trigger_candidates_ignore_malformed_metadata() -> None:
    assert trigger_candidates({"ss_tag_frequency": "{broken", "ss_dataset_dirs": "[]"}) == []
    assert trigger_candidates({"ss_dataset_dirs": json.dumps({"5_ohwx person": {"n_repeats": 5}})}) == ["ohwx person"]
