"""Issue 13, "every tensor accounted for": a corpus of misnamed LoRAs, none of which may pass as clean.

Every real fixture, and tiny generated kohya and diffusers LoRAs, are damaged in one way each (a separator changed, a
prefix doubled or dropped, a suffix spelled another way, the case changed, …). For every damaged file ``inspect``
names the problem, ``verify`` fails on it (SDK and CLI), and ``convert --repair`` restores the original names with
the original ΔW. The undamaged real fixtures keep reporting no problem at all.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lorahub import Hub, errors
from lorahub.adapters.delta import module_delta
from lorahub.adapters.repair import repair
from lorahub.dev.example_lora import clip_l_linears, sd15_unet_linears
from lorahub.files.safetensors import SafetensorsFile, read_header, write
from lorahub.formats import detect
from lorahub.formats.misnaming import DAMAGES, diagnose
from lorahub.sdk.inspect import Report, inspect
from tests.formats.headers import assert_partition
from tests.support import REAL, fixture_file

Rename = Callable[[str], str]
WIDTH = 16
RANK = 2


def _tensors(names: list[tuple[str, str, str, bool]]) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """(module, down suffix, up suffix, alpha?) → tiny random factors at width 16, rank 2."""
    rng = np.random.default_rng(0)
    tensors: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    for module, down, up, alpha in names:
        a = rng.standard_normal((RANK, WIDTH)).astype(np.float16)
        b = rng.standard_normal((WIDTH, RANK)).astype(np.float16)
        tensors[module + down] = ("F16", a.shape, a.tobytes())
        tensors[module + up] = ("F16", b.shape, b.tobytes())
        if alpha:
            tensors[module + ".alpha"] = ("F16", (), np.float16(1.0).tobytes())
    return tensors


def _modules() -> list[tuple[str, str]]:
    unet = [("lora_unet_", path) for path, _, _ in list(sd15_unet_linears())[:6]]
    return unet + [("lora_te_", path) for path, _, _ in list(clip_l_linears())[:4]]


def write_tiny_kohya(path: Path) -> Path:
    names = [(prefix + p.replace(".", "_"), ".lora_down.weight", ".lora_up.weight", True) for prefix, p in _modules()]
    write(path, _tensors(names), {"ss_network_module": "networks.lora", "ss_base_model_version": "sd_v1"})
    return path


def write_tiny_diffusers(path: Path) -> Path:
    prefixes = {"lora_unet_": "unet.", "lora_te_": "text_encoder."}
    names = [(prefixes[prefix] + p, ".lora_A.weight", ".lora_B.weight", False) for prefix, p in _modules()]
    write(path, _tensors(names), {})
    return path


REAL_FIXTURES = sorted(REAL.glob("*.safetensors"))
POKEMON = "diffusers_pr8283__sd-pokemon-model-lora__pytorch_lora_weights.safetensors"
CATUNDCHAT = "catundchat_sd15_lora__pytorch_lora_weights.safetensors"
SOURCES: dict[str, Callable[[Path], Path]] = {
    "kohya": lambda tmp: write_tiny_kohya(tmp / "kohya.safetensors"),
    "diffusers": lambda tmp: write_tiny_diffusers(tmp / "diffusers.safetensors"),
    "pokemon": lambda tmp: fixture_file(REAL / POKEMON),
    "catundchat": lambda tmp: fixture_file(REAL / CATUNDCHAT),
}


def _sub(pattern: str, replacement: str | Callable[[re.Match[str]], str]) -> Rename:
    compiled = re.compile(pattern)
    return lambda key: compiled.sub(replacement, key, count=1)


def _kohya_path_dots(key: str) -> str:
    module, dot, suffix = key.partition(".")
    prefix = "lora_unet_" if module.startswith("lora_unet_") else "lora_te_"
    return prefix + module[len(prefix) :].replace("_", ".") + dot + suffix


def _te_only(rename: Rename) -> Rename:
    return lambda key: rename(key) if key.startswith("lora_te_") else key


@dataclass(frozen=True)
class Damage:
    kind: str
    source: str
    rename: Rename
    severity: str = "error"


CORPUS = (
    Damage("suffix '.'→'_'", "kohya", _sub(r"\.(lora_(?:down|up))\.weight$", r".\1_weight")),
    Damage("suffix '_'→'.'", "kohya", _sub(r"\.lora_(down|up)\.weight$", r".lora.\1.weight")),
    Damage("module/suffix '.'→'_'", "kohya", _sub(r"\.(lora_|alpha)", r"_\1")),
    Damage("kohya path '_'→'.'", "kohya", _kohya_path_dots),
    Damage("prefix doubled", "kohya", _sub(r"^(lora_unet_|lora_te_)", r"\1\1")),
    Damage("prefix missing", "kohya", _sub(r"^(lora_unet_|lora_te_)", "")),
    Damage("prefix separator", "kohya", _sub(r"^lora_(unet|te)_", r"lora.\1.")),
    Damage("prefix upper case", "kohya", _sub(r"^(lora_unet_|lora_te_)", lambda m: m[1].upper())),
    Damage("suffix upper case", "kohya", _sub(r"\.(lora_(?:down|up)\.weight)$", lambda m: "." + m[1].upper())),
    Damage("suffix plural", "kohya", _sub(r"\.weight$", ".weights")),
    Damage(
        "PEFT suffix on kohya names",
        "kohya",
        _sub(r"lora_down\.weight$|lora_up\.weight$", lambda m: "lora_A.weight" if "down" in m[0] else "lora_B.weight"),
    ),
    Damage("only the ups misspelt", "kohya", _sub(r"\.lora_up\.weight$", ".lora_up.weights")),
    Damage("alpha misspelt", "kohya", _sub(r"\.alpha$", ".lora_alpha"), "warning"),
    Damage("alpha spelled scale", "kohya", _sub(r"\.alpha$", ".scale"), "warning"),
    Damage("text encoder only", "kohya", _te_only(_sub(r"\.weight$", "_weight")), "warning"),
    Damage("prefix doubled", "diffusers", _sub(r"^(unet\.|text_encoder\.)", r"\1\1")),
    Damage("suffix '.'→'_'", "diffusers", _sub(r"\.(lora_[AB])\.weight$", r".\1_weight")),
    Damage("suffix upper case", "diffusers", _sub(r"\.lora_([AB])\.weight$", r".LORA_\1.WEIGHT")),
    Damage("prefix case", "diffusers", _sub(r"^unet\.", "UNet.")),
    Damage("prefix doubled", "pokemon", _sub(r"^unet\.", "unet.unet.")),
    Damage("suffix plural", "pokemon", _sub(r"\.weight$", ".weights")),
    Damage("prefix separator", "pokemon", _sub(r"^unet\.", "unet_")),
    Damage("suffix '.'→'_'", "catundchat", _sub(r"\.(down|up)\.weight$", r".\1_weight")),
    Damage("suffix plural", "catundchat", _sub(r"\.weight$", ".weights")),
)
IDS = [f"{d.source}: {d.kind}" for d in CORPUS]


def damage(src: Path, out: Path, rename: Rename) -> dict[str, str]:
    """Write ``src`` with every key renamed; returns damaged key → original key."""
    with SafetensorsFile(src) as source:
        header = source.header
        names = {rename(key): key for key in header.tensors}
        assert len(names) == len(header.tensors), "a damage must not merge keys"
        infos = header.tensors
        tensors = {new: (infos[old].dtype, infos[old].shape, bytes(source.raw(old))) for new, old in names.items()}
        write(out, tensors, dict(header.metadata))
    assert any(new != old for new, old in names.items()), "the damage changed no key"
    return names


@pytest.fixture(params=CORPUS, ids=IDS)
def damaged(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Damage, Path, Path]:
    case: Damage = request.param
    original = SOURCES[case.source](tmp_path)
    path = tmp_path / "damaged.safetensors"
    damage(original, path, case.rename)
    return case, original, path


def _named(report: Report) -> list[str]:
    return [p.code for p in report.problems]


def test_corpus_has_at_least_twelve_kinds_over_every_source() -> None:
    assert len({d.kind for d in CORPUS}) >= 12
    assert {d.source for d in CORPUS} == set(SOURCES)
    assert {f.name for f in REAL_FIXTURES} >= {POKEMON, CATUNDCHAT}


def test_inspect_names_the_damage_and_accounts_for_every_tensor(damaged: tuple[Damage, Path, Path]) -> None:
    case, _, path = damaged
    report = inspect(path)
    misnamed = [p for p in report.problems if p.code == "misnamed-keys"]
    assert misnamed, _named(report)
    assert misnamed[0].severity == case.severity
    assert "loaders expect" in misnamed[0].message
    assert ("nothing-loadable" in _named(report)) == (case.severity == "error")
    header = read_header(path)
    assert_partition(header.tensors, detect(header.tensors, header.metadata))


def test_verify_fails_the_format_check_by_name(damaged: tuple[Damage, Path, Path], hub: Hub) -> None:
    _, _, path = damaged
    verdict = hub.verify(path)
    assert not verdict.ok
    check = next(c for c in verdict.checks if c.name == "format")
    assert not check.ok
    assert "misnamed-keys" in check.detail


def test_repair_restores_the_original_names_and_delta(damaged: tuple[Damage, Path, Path], tmp_path: Path) -> None:
    _, original, path = damaged
    out = tmp_path / "repaired.safetensors"
    report = repair(path, out)
    assert report.renamed
    assert report.max_abs_error == 0.0
    before, after = read_header(original), read_header(out)
    assert sorted(after.tensors) == sorted(before.tensors)
    assert inspect(out).problems == inspect(original).problems
    layout = detect(before.tensors, before.metadata)
    with SafetensorsFile(original) as a, SafetensorsFile(out) as b:
        for module in layout.modules:
            np.testing.assert_array_equal(module_delta(a, module).weight, module_delta(b, module).weight)


@pytest.mark.parametrize("path", REAL_FIXTURES, ids=[p.name for p in REAL_FIXTURES])
def test_real_fixtures_keep_reporting_no_problem(path: Path) -> None:
    report = inspect(path)
    assert report.problems == []
    assert report.unmatched_keys == []
    assert report.layer_kinds == ["lora"]


def test_a_repair_that_would_collide_is_refused_with_a_hint(tmp_path: Path) -> None:
    """SDXL text encoders differ only by prefix: a te2 key that lost its prefix cannot be told from te1's."""
    names = [
        ("lora_te1_text_model_encoder_layers_0_mlp_fc1", ".lora_down.weight", ".lora_up.weight", True),
        ("text_model_encoder_layers_0_mlp_fc1", ".lora_down.weight", ".lora_up.weight", True),
        ("lora_unet_down_blocks_0_attentions_0_proj_in", ".lora_down.weight", ".lora_up.weight", True),
    ]
    path = tmp_path / "sdxl.safetensors"
    write(path, _tensors(names), {})
    assert "misnamed-keys" in _named(inspect(path))
    with pytest.raises(errors.RepairRefusedError) as refused:
        repair(path, tmp_path / "out.safetensors")
    assert "more than one way" in refused.value.message and refused.value.hint
    assert not (tmp_path / "out.safetensors").exists()


def test_repair_of_a_clean_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(errors.RepairRefusedError, match="nothing to repair"):
        repair(write_tiny_kohya(tmp_path / "clean.safetensors"), tmp_path / "out.safetensors")


def test_a_half_module_claims_no_layer_kind(tmp_path: Path) -> None:
    """A module with lora_down and no lora_up is no LoRA: it is not claimed, and it is a structure error."""
    path = write_tiny_kohya(tmp_path / "kohya.safetensors")
    with SafetensorsFile(path) as source:
        infos = source.header.tensors
        kept = {k: (i.dtype, i.shape, bytes(source.raw(k))) for k, i in infos.items() if "lora_up" not in k}
    write(path, kept, {})
    report = inspect(path)
    assert report.layer_kinds == []
    assert {"structure", "nothing-loadable"} <= set(_named(report))


def test_kohya_names_with_peft_suffixes_are_not_ia3(tmp_path: Path) -> None:
    """IA3's bare ``.weight`` once read ``lora_unet_x.lora_A.weight`` as an IA3 module ``lora_unet_x.lora_A``, so a
    file no loader reads looked like a clean IA3 file."""
    path = tmp_path / "peft-suffix.safetensors"
    names = [(prefix + p.replace(".", "_"), ".lora_A.weight", ".lora_B.weight", False) for prefix, p in _modules()]
    write(path, _tensors(names), {})
    report = inspect(path)
    assert report.layer_kinds == []
    assert {"misnamed-keys", "nothing-loadable"} <= set(_named(report))


def test_every_damage_kind_is_exercised(tmp_path: Path) -> None:
    """Each row of the table undoes something a corpus file needs: a row no file uses is untested."""
    seen: set[str] = set()
    for case in CORPUS:
        path = tmp_path / "d.safetensors"
        damage(SOURCES[case.source](tmp_path), path, case.rename)
        header = read_header(path)
        diagnosis = diagnose(header.tensors, header.metadata, detect(header.tensors, header.metadata))
        seen |= set(diagnosis.damages)
    assert {d.code for d in DAMAGES} <= seen


# --- the CLI, as users run it ------------------------------------------------------------------------------------


def lorahub(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LORAHUB_HOME": str(home)}
    env.pop("LORAHUB_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "lorahub", *args], capture_output=True, text=True, env=env, check=False
    )


EXIT_VERIFY_FAILED = 7


FIRST_OF_EACH_SOURCE = sorted({case.source: index for index, case in reversed(list(enumerate(CORPUS)))}.values())


@pytest.mark.slow
def test_cli_inspect_verify_and_repair_on_the_corpus(tmp_path: Path) -> None:
    """The shell says what the SDK found: one damaged file of each source (the SDK tests above take every case;
    three commands per case would cost a minute and a half here)."""
    home = tmp_path / "home"
    for index in FIRST_OF_EACH_SOURCE:
        case = CORPUS[index]
        folder = tmp_path / str(index)
        folder.mkdir()
        original = SOURCES[case.source](folder)
        path = folder / "damaged.safetensors"
        damage(original, path, case.rename)
        shown = lorahub("inspect", str(path), home=home)
        assert shown.returncode == 0, shown.stderr
        assert "misnamed-keys" in shown.stdout and "no problems found" not in shown.stdout, IDS[index]
        verified = lorahub("verify", str(path), "--json", home=home)
        assert verified.returncode == EXIT_VERIFY_FAILED, verified.stderr
        checks = {c["name"]: c for c in json.loads(verified.stdout)["checks"]}
        assert not checks["format"]["ok"] and "misnamed-keys" in checks["format"]["detail"]
        out = folder / "repaired.safetensors"
        repaired = lorahub("convert", str(path), str(out), "--repair", "--json", home=home)
        assert repaired.returncode == 0, repaired.stderr
        assert sorted(read_header(out).tensors) == sorted(read_header(original).tensors), IDS[index]
        assert json.loads(repaired.stdout)["max_abs_error"] == 0.0


@pytest.mark.slow
def test_cli_repair_refusal_and_usage(tmp_path: Path) -> None:
    home = tmp_path / "home"
    clean = write_tiny_kohya(tmp_path / "clean.safetensors")
    refused = lorahub("convert", str(clean), str(tmp_path / "out.safetensors"), "--repair", home=home)
    assert refused.returncode == 1
    assert "error[repair-refused]" in refused.stderr and "hint:" in refused.stderr
    mixed = lorahub("convert", str(clean), str(tmp_path / "out.safetensors"), "--repair", "--to", "kohya", home=home)
    assert mixed.returncode == 2
    neither = lorahub("convert", str(clean), str(tmp_path / "out.safetensors"), home=home)
    assert neither.returncode == 2 and "--repair" in neither.stderr
