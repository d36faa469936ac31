"""Embedding a signed card in a safetensors header (identity unchanged) and the sidecar alternative."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from lorahub import errors
from lorahub.files.digests import Hashes, digest_file
from lorahub.files.safetensors import read_header
from lorahub.signing import (
    Identity,
    KeyRecord,
    SignedCard,
    Signer,
    StaticTrust,
    cosign,
    embed_card,
    read_embedded,
    read_sidecar,
    sidecar_path,
    sign_card,
    unsigned,
    verify_card,
    write_sidecar,
)
from lorahub.signing.dsse import Envelope
from lorahub.signing.embed import CARD_KEY, SIGNATURES_KEY
from tests.signing.helpers import DIGEST_A, full_card
from tests.support import real_file

REAL_NAME = "catundchat_sd15_lora__pytorch_lora_weights.safetensors"
ORIGINAL_METADATA = {"format": "pt", "ss_output_name": "pixel-art", "note": "ünïcode ✓"}


def _write_adapter(path: Path) -> Path:
    rng = np.random.default_rng(7)
    tensors = {
        "lora_unet_down.lora_down.weight": rng.standard_normal((4, 320)).astype(np.float16),
        "lora_unet_down.lora_up.weight": rng.standard_normal((320, 4)).astype(np.float16),
        "lora_unet_down.alpha": np.array(4.0, dtype=np.float32),
        "lora_te_text.lora_down.weight": rng.standard_normal((4, 768)).astype(np.float32),
    }
    save_file(tensors, str(path), metadata=ORIGINAL_METADATA)
    return path


@pytest.fixture(params=["written", "real"])
def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    target = tmp_path / "adapter.safetensors"
    if request.param == "real":
        shutil.copyfile(real_file(REAL_NAME), target)
        return target
    return _write_adapter(target)


def _hashes(path: Path) -> Hashes:
    return digest_file(path, read_header(path), check_values=False).hashes


def _signed_for(path: Path, signer: Signer, creator: Identity) -> SignedCard:
    content = _hashes(path).content
    assert content is not None
    return sign_card(full_card(creator, content_digest=content), signer)


def _trust(*identities: Identity) -> StaticTrust:
    return StaticTrust(KeyRecord.from_identity(i) for i in identities)


def test_embed_keeps_identity_and_tensors(adapter: Path, alice_signer: Signer, alice: Identity) -> None:
    before_hashes, before_header = _hashes(adapter), read_header(adapter)
    before_tensors = load_file(str(adapter))
    signed = _signed_for(adapter, alice_signer, alice)

    assert embed_card(adapter, signed) == adapter

    after_hashes, after_header = _hashes(adapter), read_header(adapter)
    assert after_hashes.content == before_hashes.content
    assert after_hashes.autov3 == before_hashes.autov3
    assert after_hashes.sha256 != before_hashes.sha256
    assert after_header.header_length % 8 == 0
    raw_header = adapter.read_bytes()[8 : after_header.data_start]
    assert raw_header.rstrip(b" ").endswith(b"}")  # padded with spaces, as safetensors pads
    assert after_header.file_size - after_header.data_start == before_header.file_size - before_header.data_start
    assert [(t.name, t.dtype, t.shape, t.begin, t.end) for t in after_header.tensors.values()] == [
        (t.name, t.dtype, t.shape, t.begin, t.end) for t in before_header.tensors.values()
    ]
    after_tensors = load_file(str(adapter))
    assert after_tensors.keys() == before_tensors.keys()
    for name, array in before_tensors.items():
        assert after_tensors[name].dtype == array.dtype
        np.testing.assert_array_equal(after_tensors[name], array)

    metadata = after_header.metadata
    for key, value in before_header.metadata.items():
        assert metadata[key] == value
    assert set(metadata) == set(before_header.metadata) | {CARD_KEY, SIGNATURES_KEY}
    assert metadata[CARD_KEY].encode("utf-8") == signed.payload

    embedded = read_embedded(metadata)
    assert embedded == signed
    assert embedded is not None and verify_card(embedded, _trust(alice)).trusted


def test_written_file_keeps_its_metadata_exactly(tmp_path: Path, alice_signer: Signer, alice: Identity) -> None:
    path = _write_adapter(tmp_path / "x.safetensors")
    embed_card(path, _signed_for(path, alice_signer, alice))
    metadata = dict(read_header(path).metadata)
    assert {k: metadata[k] for k in ORIGINAL_METADATA} == ORIGINAL_METADATA


def test_embed_to_another_path_leaves_the_source(tmp_path: Path, alice_signer: Signer, alice: Identity) -> None:
    source = _write_adapter(tmp_path / "in.safetensors")
    before = _hashes(source)
    out = tmp_path / "out.safetensors"
    assert embed_card(source, _signed_for(source, alice_signer, alice), out=out) == out
    assert _hashes(source) == before
    assert read_embedded(read_header(source).metadata) is None
    assert read_embedded(read_header(out).metadata) is not None
    assert _hashes(out).content == before.content


def test_embed_again_replaces_the_card(
    tmp_path: Path, alice_signer: Signer, bob_signer: Signer, alice: Identity, bob: Identity
) -> None:
    path = _write_adapter(tmp_path / "x.safetensors")
    signed = _signed_for(path, alice_signer, alice)
    embed_card(path, signed)
    cosigned = cosign(signed, bob_signer)
    embed_card(path, cosigned)
    embedded = read_embedded(read_header(path).metadata)
    assert embedded == cosigned
    result = verify_card(embedded, _trust(alice, bob))
    assert [s.valid for s in result.signatures] == [True, True]


def test_embed_keeps_the_file_mode(tmp_path: Path, alice_signer: Signer, alice: Identity) -> None:
    folder = tmp_path / "adapters"
    folder.mkdir()
    path = _write_adapter(folder / "x.safetensors")
    path.chmod(0o640)
    embed_card(path, _signed_for(path, alice_signer, alice))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert [p.name for p in folder.iterdir()] == ["x.safetensors"]  # no temporary file left behind


def test_card_for_other_content_is_refused(tmp_path: Path, alice_signer: Signer, alice: Identity) -> None:
    path = _write_adapter(tmp_path / "x.safetensors")
    before = path.read_bytes()
    wrong = sign_card(full_card(alice, content_digest=DIGEST_A), alice_signer)
    with pytest.raises(errors.HashMismatchError):
        embed_card(path, wrong)
    assert path.read_bytes() == before


def test_editing_one_character_breaks_the_signature(tmp_path: Path, alice_signer: Signer, alice: Identity) -> None:
    path = _write_adapter(tmp_path / "x.safetensors")
    embed_card(path, _signed_for(path, alice_signer, alice))
    data = path.read_bytes()
    header_end = read_header(path).data_start
    assert data.count(b"signed description") == 1
    edited = data.replace(b"signed description", b"signet description")
    assert edited.index(b"signet") < header_end and len(edited) == len(data)
    path.write_bytes(edited)

    embedded = read_embedded(read_header(path).metadata)
    assert embedded is not None and embedded.card.description.startswith("signet")
    result = verify_card(embedded, _trust(alice))
    assert not result.any_valid and not result.trusted
    assert "does not verify" in result.signatures[0].reason


def test_read_embedded_absent_and_damaged(alice_signer: Signer, alice: Identity) -> None:
    assert read_embedded({}) is None
    assert read_embedded({"ss_output_name": "x"}) is None
    signed = sign_card(full_card(alice), alice_signer)
    good = {
        CARD_KEY: signed.payload.decode(),
        SIGNATURES_KEY: json.dumps([s.to_json() for s in signed.envelope.signatures]),
    }
    assert read_embedded(good) == signed
    damaged = [
        ({CARD_KEY: good[CARD_KEY]}, "no lorahub.signatures"),
        ({SIGNATURES_KEY: good[SIGNATURES_KEY]}, "no lorahub.card"),
        ({**good, SIGNATURES_KEY: "[{"}, "not JSON"),
        ({**good, SIGNATURES_KEY: "{}"}, "must be a list"),
        ({**good, SIGNATURES_KEY: '[{"keyid":"x","sig":"%%%"}]'}, "base64"),
        ({**good, CARD_KEY: json.dumps(signed.card.to_dict(), indent=1)}, "canonical"),
        ({**good, CARD_KEY: good[CARD_KEY].replace('"version":2', '"version":"2"')}, "card field version"),
    ]
    for metadata, message in damaged:
        with pytest.raises(errors.CardError, match=message):
            read_embedded(metadata)


def test_unsigned_card_embeds_and_signs_later(tmp_path: Path, alice_signer: Signer, alice: Identity) -> None:
    path = _write_adapter(tmp_path / "x.safetensors")
    content = _hashes(path).content
    assert content is not None
    bare = unsigned(full_card(alice, content_digest=content))
    embed_card(path, bare)
    embedded = read_embedded(read_header(path).metadata)
    assert embedded == bare and embedded is not None and embedded.envelope.signatures == ()
    assert not verify_card(embedded, _trust(alice)).any_valid
    embed_card(path, cosign(embedded, alice_signer))
    signed = read_embedded(read_header(path).metadata)
    assert signed is not None and verify_card(signed, _trust(alice)).trusted_signers == (alice.fingerprint,)


# --- sidecars --------------------------------------------------------------------------------------------------


def test_sidecar_round_trip(adapter: Path, alice_signer: Signer, alice: Identity) -> None:
    assert sidecar_path(adapter) == adapter.with_name("adapter.safetensors.lorahub.json")
    assert read_sidecar(adapter) is None
    before = adapter.read_bytes()
    signed = _signed_for(adapter, alice_signer, alice)

    assert write_sidecar(adapter, signed) == sidecar_path(adapter)

    assert adapter.read_bytes() == before  # the adapter itself is untouched
    document = json.loads(sidecar_path(adapter).read_text(encoding="utf-8"))
    assert Envelope.from_json(document) == signed.envelope  # a plain DSSE envelope
    loaded = read_sidecar(adapter)
    assert loaded == signed
    assert loaded is not None and verify_card(loaded, _trust(alice)).trusted


def test_damaged_sidecar_is_a_card_error(tmp_path: Path, alice_signer: Signer, alice: Identity) -> None:
    path = tmp_path / "x.safetensors"
    write_sidecar(path, sign_card(full_card(alice), alice_signer))
    sidecar = sidecar_path(path)
    document = json.loads(sidecar.read_text())
    document["payloadType"] = "application/json"
    sidecar.write_text(json.dumps(document))
    with pytest.raises(errors.CardError, match="not a lorahub card"):
        read_sidecar(path)
    sidecar.write_text("{not json")
    with pytest.raises(errors.CardError, match="not UTF-8 JSON"):
        read_sidecar(path)
