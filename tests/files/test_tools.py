"""Each tool's LoRA folders on real install layouts: defaults, launchers, extra_model_paths.yaml, invokeai.yaml."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from lorahub import errors
from lorahub.files.tools import LAUNCHER, TOOL_FOLDERS, comfyui_extra_lora_paths, launcher_args, lora_folders

UUID = "3f2a9c1e-8b7d-4e6f-a5c4-1d2e3f4a5b6c"
posix_launcher = pytest.mark.skipif(LAUNCHER != "webui-user.sh", reason="webui-user.sh is the launcher on POSIX")
LAUNCHER_LINE = (
    'export COMMANDLINE_ARGS="--lora-dir models/Lora"\n'
    if LAUNCHER == "webui-user.sh"
    else "set COMMANDLINE_ARGS=--lora-dir models/Lora\r\n"
)


def _install(root: Path, tool: str, *folders: str) -> Path:
    """An install of ``tool`` at ``root``: its marker files and the given folders (relative to root)."""
    root.mkdir(parents=True, exist_ok=True)
    for marker in TOOL_FOLDERS[tool].markers:
        path = root / marker
        if "." in marker:
            path.write_text("# marker\n")
        else:
            path.mkdir(exist_ok=True)
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)
    return root


def _snapshot(folder: Path) -> dict[str, tuple[bytes | str, int]]:
    state: dict[str, tuple[bytes | str, int]] = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        state[str(path)] = (path.read_bytes() if path.is_file() else "folder", info.st_mtime_ns)
    return state


# --- A1111 and Forge ---------------------------------------------------------------------------------------------


def test_a1111_reads_lora_and_the_old_lycoris_folder(tmp_path: Path) -> None:
    root = _install(tmp_path / "webui", "a1111", "models/Lora", "models/LyCORIS", "models/Stable-diffusion")
    assert lora_folders("a1111", root) == [root / "models/Lora", root / "models/LyCORIS"]
    (root / "models/LyCORIS").rmdir()
    assert lora_folders("a1111", root) == [root / "models/Lora"]


def test_a1111_folders_from_webui_user_sh(tmp_path: Path) -> None:
    root = _install(tmp_path / "webui", "a1111", "models/Lora", "models/LyCORIS", "my loras", "lyco")
    outside = tmp_path / "nas" / "loras"
    outside.mkdir(parents=True)
    (root / "webui-user.sh").write_text(
        "#!/bin/bash\n"
        '#export COMMANDLINE_ARGS="--lora-dir /nowhere"\n'
        'export COMMANDLINE_ARGS="--xformers"\n'
        f"export COMMANDLINE_ARGS=\"$COMMANDLINE_ARGS --lora-dir '{outside}' \\\n"
        '  --lyco-dir=lyco"  # appended\n'
    )
    assert launcher_args(root / "webui-user.sh") == ["--xformers", "--lora-dir", str(outside), "--lyco-dir=lyco"]


@posix_launcher
def test_the_launcher_options_replace_the_default_folders(tmp_path: Path) -> None:
    root = _install(tmp_path / "webui", "a1111", "models/Lora", "models/LyCORIS", "lyco")
    outside = tmp_path / "nas" / "loras"
    outside.mkdir(parents=True)
    (root / "webui-user.sh").write_text(f'export COMMANDLINE_ARGS="--lora-dir {outside} --lyco-dir=lyco"\n')
    assert lora_folders("a1111", root) == [outside, root / "lyco"]
    (root / "webui-user.sh").write_text('export COMMANDLINE_ARGS="--lyco-dir-backcompat /gone --lora-dir lyco"\n')
    assert lora_folders("a1111", root) == [root / "lyco"]  # a folder that does not exist is left out


@posix_launcher
def test_models_and_data_dir_move_the_default_folders(tmp_path: Path) -> None:
    root = _install(tmp_path / "webui", "a1111", "models/Lora")
    data = tmp_path / "data"
    (data / "models" / "Lora").mkdir(parents=True)
    (data / "models" / "LyCORIS").mkdir()
    (root / "webui-user.sh").write_text(f'export COMMANDLINE_ARGS="--data-dir {data}"\n')
    assert lora_folders("a1111", root) == [data / "models/Lora", data / "models/LyCORIS"]
    (root / "elsewhere" / "Lora").mkdir(parents=True)
    (root / "webui-user.sh").write_text(f'COMMANDLINE_ARGS="--data-dir {data} --models-dir elsewhere"\n')
    assert lora_folders("a1111", root) == [root / "elsewhere/Lora"]


def test_webui_user_bat_is_read_as_cmd_reads_it(tmp_path: Path) -> None:
    launcher = tmp_path / "webui-user.bat"
    launcher.write_text(
        "@echo off\r\n"
        "set PYTHON=\r\n"
        "set COMMANDLINE_ARGS=--medvram\r\n"
        "@REM set COMMANDLINE_ARGS=--lora-dir C:/nowhere\r\n"
        ":: set COMMANDLINE_ARGS=--lora-dir C:/nowhere\r\n"
        "set COMMANDLINE_ARGS=%COMMANDLINE_ARGS% ^\r\n"
        ' --lora-dir "D:\\AI\\My Loras" ^\r\n'
        " --ckpt-dir D:/models\r\n"
        'SET "commandline_args=%commandline_args% --lyco-dir E:/lyco" & rem trailing\r\n'
        "call webui.bat\r\n"
    )
    assert launcher_args(launcher) == [
        "--medvram",
        "--lora-dir",
        "D:\\AI\\My Loras",
        "--ckpt-dir",
        "D:/models",
        "--lyco-dir",
        "E:/lyco",
    ]


@posix_launcher
@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("export COMMANDLINE_ARGS=--xformers --lora-dir /x\n", "unquoted spaces"),
        ('export COMMANDLINE_ARGS="--lora-dir /x\n', "never closed"),
        ('export COMMANDLINE_ARGS="--lora-dir $HOME/loras"\n', "cannot expand"),
        ('export COMMANDLINE_ARGS="--xformers --lora-dir"\n', "not followed by a folder"),
        ('export COMMANDLINE_ARGS="--lora-dir --xformers"\n', "not followed by a folder"),
    ],
)
def test_a_launcher_line_lorahub_cannot_read_as_the_shell_would_is_an_error(
    tmp_path: Path, line: str, message: str
) -> None:
    root = _install(tmp_path / "webui", "a1111", "models/Lora")
    (root / "webui-user.sh").write_text(line)
    with pytest.raises(errors.ToolConfigError, match=message):
        lora_folders("a1111", root)


def test_forge_reads_only_its_lora_folder(tmp_path: Path) -> None:
    root = _install(tmp_path / "forge", "forge", "models/Lora", "models/LyCORIS", "modules")
    (root / "webui.py").write_text("")
    assert lora_folders("forge", root) == [root / "models/Lora"]


@posix_launcher
def test_forge_reference_a1111_home(tmp_path: Path) -> None:
    root = _install(tmp_path / "forge", "forge", "models/Lora")
    a1111 = tmp_path / "a1111"
    (a1111 / "models" / "lora").mkdir(parents=True)  # Forge spells it in lower case
    (root / "webui-user.sh").write_text(f'export COMMANDLINE_ARGS="--forge-ref-a1111-home {a1111}"\n')
    assert lora_folders("forge", root) == [a1111 / "models/lora"]
    (root / "webui-user.sh").write_text(f'export COMMANDLINE_ARGS="--forge-ref-a1111-home {a1111} --lora-dir mine"\n')
    (root / "mine").mkdir()
    assert lora_folders("forge", root) == [root / "mine"]
    (root / "webui-user.sh").write_text(f'export COMMANDLINE_ARGS="--forge-ref-a1111-home {tmp_path / "none"}"\n')
    assert lora_folders("forge", root) == [root / "models/Lora"]


def test_forge_and_a1111_are_told_apart(tmp_path: Path) -> None:
    forge = _install(tmp_path / "forge", "forge", "modules", "models/Lora")
    a1111 = _install(tmp_path / "a1111", "a1111", "models/Lora")
    with pytest.raises(errors.ToolInstallNotFoundError, match="modules_forge") as raised:
        lora_folders("a1111", forge)
    assert raised.value.hint is not None and "(forge)" in raised.value.hint
    with pytest.raises(errors.ToolInstallNotFoundError, match="no modules_forge") as raised:
        lora_folders("forge", a1111)
    assert raised.value.hint is not None and "(a1111)" in raised.value.hint


# --- ComfyUI -----------------------------------------------------------------------------------------------------


def test_comfyui_reads_models_loras_and_never_models_lora(tmp_path: Path) -> None:
    root = _install(tmp_path / "ComfyUI", "comfyui", "models/loras/sub", "models/lora", "models/checkpoints")
    assert lora_folders("comfyui", root) == [root / "models/loras"]


def test_extra_model_paths_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _install(tmp_path / "ComfyUI", "comfyui", "models/loras")
    webui = tmp_path / "stable-diffusion-webui"
    for folder in ("models/Lora", "models/LyCORIS"):
        (webui / folder).mkdir(parents=True)
    nas = tmp_path / "nas"
    (nas / "loras").mkdir(parents=True)
    home = tmp_path / "home"
    (home / "loras").mkdir(parents=True)
    (root / "next to yaml").mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("LORA_STORE", str(nas))
    (root / "extra_model_paths.yaml").write_text(
        "#config for a1111 ui\n"
        "a1111:\n"
        "    base_path: ../stable-diffusion-webui/  # relative to this file's folder\n"
        "    checkpoints: models/Stable-diffusion\n"
        "    loras: |\n"
        "         models/Lora\n"
        "         models/LyCORIS\n"
        "         models/missing\n"
        "store:\n"
        "    base_path: $LORA_STORE\n"
        "    is_default: true\n"
        "    loras: loras\n"
        "mine:\n"
        f"    base_path: {nas}\n"
        f"    loras: {home / 'loras'}  # an absolute entry wins over the base\n"
        "no_base:\n"
        '    loras: "next to yaml"\n'
        "tilde:\n"
        "    base_path: ~/\n"
        "    loras: loras/\n"
        "#comfyui:\n"
        "#     base_path: path/to/comfyui/\n"
        "empty:\n"
    )
    assert comfyui_extra_lora_paths(root) == [
        webui / "models/Lora",
        webui / "models/LyCORIS",
        webui / "models/missing",
        nas / "loras",
        home / "loras",
        root / "next to yaml",
        home / "loras",
    ]
    assert lora_folders("comfyui", root) == [
        root / "models/loras",
        root / "next to yaml",
        home / "loras",
        nas / "loras",
        webui / "models/Lora",
        webui / "models/LyCORIS",
    ]


def test_a_folder_inside_another_is_left_to_the_walk(tmp_path: Path) -> None:
    root = _install(tmp_path / "ComfyUI", "comfyui", "models/loras/flux")
    (root / "extra_model_paths.yaml").write_text("again:\n  base_path: models\n  loras: |\n    loras/flux\n    loras\n")
    assert lora_folders("comfyui", root) == [root / "models/loras"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a1111:\n  loras:\n    - models/Lora\n", "line 3: lists"),
        ("a1111:\n  loras: [models/Lora]\n", "line 2: flow lists"),
        ("a1111: models/Lora\n", "section 'a1111' is not a mapping"),
        ("a1111:\n  base_path:\n  loras: x\n", "base_path is not a path"),
        ("a1111:\n  loras:\n    nested: x\n", "a1111.loras is not a path"),
        ("a1111:\n\tloras: x\n", "line 2: a tab"),
    ],
)
def test_extra_model_paths_yaml_lorahub_cannot_read_is_an_error(tmp_path: Path, text: str, message: str) -> None:
    root = _install(tmp_path / "ComfyUI", "comfyui", "models/loras")
    (root / "extra_model_paths.yaml").write_text(text)
    with pytest.raises(errors.ToolConfigError, match=message):
        lora_folders("comfyui", root)


def test_a_symlinked_install_is_resolved_and_its_yaml_read_from_the_real_folder(tmp_path: Path) -> None:
    real = _install(tmp_path / "real" / "ComfyUI", "comfyui", "models/loras")
    (tmp_path / "real" / "extra").mkdir()
    (real / "extra_model_paths.yaml").write_text("x:\n  base_path: ..\n  loras: extra\n")
    link = tmp_path / "link"
    link.symlink_to(real)
    assert lora_folders("comfyui", link) == [real / "models/loras", tmp_path / "real" / "extra"]


# --- InvokeAI ----------------------------------------------------------------------------------------------------

INVOKEAI_YAML = """# Internal metadata - do not edit:
schema_version: 4.0.2

# Put user settings here - see https://invoke.ai/configuration/invokeai-yaml/:
host: 0.0.0.0 # serve the app on your local network
remote_api_tokens:
  - url_regex: "civitai.com"
    token: secret
"""


def test_invokeai_base_type_layout(tmp_path: Path) -> None:
    root = _install(tmp_path / "invokeai", "invokeai", "models/sd-1/lora", "models/sdxl/lora", "models/sdxl/main")
    (root / "models/flux/control_lora").mkdir(parents=True)
    (root / "invokeai.yaml").write_text(INVOKEAI_YAML)
    assert lora_folders("invokeai", root) == [
        root / "models/flux/control_lora",
        root / "models/sd-1/lora",
        root / "models/sdxl/lora",
    ]


def test_invokeai_models_dir_elsewhere(tmp_path: Path) -> None:
    root = _install(tmp_path / "invokeai", "invokeai", "models/sdxl/lora")
    models = tmp_path / "external drive" / "models"
    (models / "sd-1" / "lora").mkdir(parents=True)
    (root / "invokeai.yaml").write_text(INVOKEAI_YAML + f'models_dir: "{models}" # store models elsewhere\n')
    assert lora_folders("invokeai", root) == [models / "sd-1/lora"]
    (root / "invokeai.yaml").write_text(INVOKEAI_YAML + "models_dir: mine\n")
    (root / "mine" / "any" / "lora").mkdir(parents=True)
    assert lora_folders("invokeai", root) == [root / "mine/any/lora"]


def test_invokeai_per_model_folders_return_the_models_folder(tmp_path: Path) -> None:
    root = _install(tmp_path / "invokeai", "invokeai", f"models/{UUID}", "models/sdxl/lora")
    (root / "invokeai.yaml").write_text(INVOKEAI_YAML)
    (root / "models" / UUID / "pixel.safetensors").write_bytes(b"x")
    assert lora_folders("invokeai", root) == [root / "models"]  # its old sdxl/lora is inside


# --- every tool --------------------------------------------------------------------------------------------------


def test_unknown_tools_and_roots_that_are_not_an_install(tmp_path: Path) -> None:
    with pytest.raises(errors.UnknownChoiceError, match="a1111, comfyui, forge, invokeai"):
        lora_folders("fooocus", tmp_path)
    with pytest.raises(errors.PathNotFoundError):
        lora_folders("comfyui", tmp_path / "missing")
    (tmp_path / "file").write_text("")
    with pytest.raises(errors.NotAFolderError):
        lora_folders("comfyui", tmp_path / "file")
    for tool in TOOL_FOLDERS:
        with pytest.raises(errors.ToolInstallNotFoundError) as raised:
            lora_folders(tool, tmp_path)
        assert raised.value.hint == errors.ToolInstallNotFoundError.default_hint


def test_a_comfyui_folder_named_as_invokeai_says_what_it_is(tmp_path: Path) -> None:
    root = _install(tmp_path / "ComfyUI", "comfyui", "models/loras")
    with pytest.raises(errors.ToolInstallNotFoundError, match=r"no invokeai\.yaml") as raised:
        lora_folders("invokeai", root)
    assert raised.value.hint is not None and "ComfyUI" in raised.value.hint


@pytest.mark.parametrize(
    ("tool", "build"),
    [
        ("a1111", lambda root: (root / LAUNCHER).write_text(LAUNCHER_LINE)),
        ("forge", lambda root: (root / LAUNCHER).write_text(LAUNCHER_LINE)),
        ("comfyui", lambda root: (root / "extra_model_paths.yaml").write_text("a:\n  loras: models/Lora\n")),
        ("invokeai", lambda root: (root / "invokeai.yaml").write_text("models_dir: models\n")),
    ],
)
def test_nothing_in_an_install_is_written(tmp_path: Path, tool: str, build: Callable[[Path], object]) -> None:
    root = _install(tmp_path / tool, tool, "models/Lora", "models/LyCORIS", "models/loras", "models/sdxl/lora")
    build(root)
    (root / "models" / "Lora" / "ink.safetensors").write_bytes(b"x")
    os.utime(root / "models" / "Lora", ns=(1, 1))
    before = _snapshot(tmp_path)
    assert lora_folders(tool, root)
    assert _snapshot(tmp_path) == before
