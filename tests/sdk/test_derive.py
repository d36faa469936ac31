from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lorahub import Hub
from lorahub.sdk.adding import AddOptions
from lorahub.sdk.derive import add_derived


def test_derived_version_names_its_parent_inherits_its_card_and_is_audited(
    hub: Hub, example_lora: Callable[..., Path]
) -> None:
    parent = hub.add(
        example_lora("ink"), AddOptions(name="ink", license="CC-BY-4.0", triggers=["inky"], commercial_use=["image"])
    )
    parent_version = hub.version("ink@1")
    child = add_derived(
        hub,
        example_lora("ink", seed=1),
        [(parent_version, {"format": "diffusers"})],
        relation="converted-from",
        action="convert",
    )
    assert (child.name, child.version) == ("ink", 2)
    card = hub.signed_card(hub.version("ink@2")).card
    assert [(p.digest, p.relation, p.parameters) for p in card.lineage] == [
        (parent.content_digest, "converted-from", {"format": "diffusers"})
    ]
    assert card.license.id == "CC-BY-4.0" and card.license.commercial_use == ("image",)
    assert card.trigger_words == ("inky",)
    [event] = hub.audit(adapter="ink", action="convert")
    assert event["subject_version"] == 2
    assert event["details"]["parents"][0]["ref"] == "ink@1"


def test_explicit_options_override_what_the_parent_said(hub: Hub, example_lora: Callable[..., Path]) -> None:
    hub.add(example_lora("ink"), AddOptions(name="ink", license="CC-BY-4.0"))
    result = add_derived(
        hub,
        example_lora("ink", seed=2),
        [(hub.version("ink"), {"rank": 1})],
        relation="resized-from",
        action="resize",
        options=AddOptions(name="ink-small", license="MIT"),
    )
    card = hub.signed_card(hub.version(f"{result.name}@{result.version}")).card
    assert result.name == "ink-small" and card.license.id == "MIT"
