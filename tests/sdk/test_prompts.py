from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lorahub import Hub, errors
from lorahub.sdk.adding import AddOptions
from lorahub.sdk.prompts import _check_known, parse_prompt
from lorahub.sdk.refs import parse_weighted


def test_weights_default_versions_and_cleaning() -> None:
    parsed = parse_prompt("a cat <lora:pixel-art:0.7>, in a hat <lora:ink@2:-0.25> <lora:plain>")
    assert [(a.ref, a.weight) for a in parsed.adapters] == [("pixel-art", 0.7), ("ink@2", -0.25), ("plain", 1.0)]
    assert parsed.text == "a cat, in a hat"


def test_tags_only_prompt_and_dangling_commas() -> None:
    assert parse_prompt("<lora:a:1>, <lora:b:0.5>").text == ""
    assert parse_prompt("<lora:a>, castle,  <lora:b>, at dusk").text == "castle, at dusk"


def test_escaped_tags_stay_as_text_and_other_tags_are_left_alone() -> None:
    parsed = parse_prompt(r"write \<lora:name:0.5> literally <hypernet:x:1>")
    assert parsed.adapters == []
    assert parsed.text == "write <lora:name:0.5> literally <hypernet:x:1>"


@pytest.mark.parametrize("bad", ["<lora::0.5>", "<lora:a:b:c>", "<lora:a:heavy>", "<lora:>"])
def test_malformed_tags_are_errors_with_a_hint(bad: str) -> None:
    with pytest.raises(errors.LorahubError) as raised:
        parse_prompt(f"x {bad}")
    assert raised.value.hint


def test_unknown_names_are_listed_with_near_matches(hub: Hub, example_lora: Callable[..., Path]) -> None:
    hub.add(example_lora("pixel-art"), AddOptions(name="pixel-art"))
    with pytest.raises(errors.UnknownAdapterNameError, match="pixel-arts") as raised:
        _check_known(hub, ["pixel-arts", "pixel-art", "zzz"])
    assert "did you mean pixel-art" in raised.value.message and "'zzz'" in raised.value.message


def test_weighted_specs() -> None:
    digest = "a" * 64
    assert parse_weighted("ink@2:0.4") == ("ink@2", 0.4)
    assert parse_weighted("ink") == ("ink", 1.0)
    assert parse_weighted(f"sha256:{digest}") == (f"sha256:{digest}", 1.0)
    assert parse_weighted(f"sha256:{digest}:0.5") == (f"sha256:{digest}", 0.5)
    with pytest.raises(errors.LorahubError, match="must be a number"):
        parse_weighted("ink:heavy")
