"""The folders A1111, Forge, ComfyUI and InvokeAI read LoRA-family files from, found under their install folder.

Read in each tool's source (2026); the tool's own defaults first, then what its configuration files change.
Nothing here writes, and nothing runs: a launcher script is read as text, never executed.

**A1111** (AUTOMATIC1111/stable-diffusion-webui). ``extensions-builtin/Lora/networks.py`` lists
``--lora-dir`` (default ``MODELS/Lora``) and ``--lyco-dir-backcompat`` (default ``MODELS/LyCORIS``, the folder of
the old LyCORIS extension; argparse also takes ``--lyco-dir`` for it, as that extension's own option was called).
``MODELS`` is ``--models-dir``, else ``--data-dir``/models, else ``INSTALL/models`` (``modules/paths_internal.py``).
The options come from ``COMMANDLINE_ARGS``, which ``webui.sh`` takes from ``webui-user.sh`` (POSIX) and
``webui-user.bat`` sets on Windows; A1111 splits it with ``shlex.split`` and resolves relative folders from the
install folder, its working directory. Options typed on the command line itself cannot be seen here.

**Forge** (lllyasviel/stable-diffusion-webui-forge, and its forks, which keep ``modules_forge``). The same
``paths_internal`` and launchers; ``extensions-builtin/sd_forge_lora`` lists ``--lora-dir`` only (it keeps the
LyCORIS option but never reads the folder), and ``--forge-ref-a1111-home HOME`` sets ``--lora-dir HOME/models/lora``
when that folder exists and no ``--lora-dir`` was given (``modules/launch_utils.py``).

**ComfyUI** (comfyanonymous/ComfyUI). ``folder_paths.py``: ``INSTALL/models/loras`` (there never was a
``models/lora``), where ``INSTALL`` is the real path of the folder holding it. ``utils/extra_config.py`` adds every
``loras`` entry of ``INSTALL/extra_model_paths.yaml``: in each section, ``base_path`` (``~`` and ``$VARS`` expanded,
in lorahub's environment here; relative to the YAML file's folder) is joined to each line of the value; without a
base path, relative lines are relative to the YAML file's folder. A file given with ``--extra-model-paths-config``
and ComfyUI Desktop's ``extra_models_config.yaml`` (in its app data) cannot be seen here.

**InvokeAI** (invoke-ai/InvokeAI). ``invokeai.yaml`` in the root; ``models_dir`` (default ``models``, relative to
the root; ``INVOKEAI_MODELS_DIR`` is not seen). Up to 6.9 installed models live in ``MODELS/<base>/<type>/``, LoRAs
in ``MODELS/<base>/lora`` (``sd-1``, ``sdxl``, ``flux``, …) and ``MODELS/<base>/control_lora``. From 6.10
(``refactor: model manager v3``; migration 24 moves the old layout) each model has its own folder
``MODELS/<key>/``, a UUID, and only Invoke's database says which hold LoRAs: then the whole models folder is
returned, for a scan that tells adapters from other models by their contents. Models registered in place, outside
the models folder, are only in the database and are not found here.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lorahub import errors
from lorahub.files.yaml_subset import Value, parse_mapping, top_level_scalar


@dataclass(frozen=True)
class ToolLayout:
    """Where one tool keeps LoRA-family files, before its configuration says otherwise."""

    name: str
    markers: tuple[str, ...]
    """Paths, relative to the install folder, that all exist in an install of the tool."""
    unless: tuple[str, ...]
    """Paths whose presence makes it another tool's install (Forge is a fork of A1111)."""
    models: str
    """The models folder, relative to the install folder."""
    folders: tuple[tuple[str, str | None], ...]
    """(folder or glob pattern relative to the models folder, the launcher option that replaces it, if any)."""


TOOL_FOLDERS: Mapping[str, ToolLayout] = {
    "a1111": ToolLayout(
        name="AUTOMATIC1111 web UI",
        markers=("webui.py", "modules"),
        unless=("modules_forge",),
        models="models",
        folders=(("Lora", "--lora-dir"), ("LyCORIS", "--lyco-dir-backcompat")),
    ),
    "forge": ToolLayout(
        name="Forge",
        markers=("webui.py", "modules_forge"),
        unless=(),
        models="models",
        folders=(("Lora", "--lora-dir"),),
    ),
    "comfyui": ToolLayout(
        name="ComfyUI",
        markers=("folder_paths.py", "comfy"),
        unless=(),
        models="models",
        folders=(("loras", None),),
    ),
    "invokeai": ToolLayout(
        name="InvokeAI",
        markers=("invokeai.yaml",),
        unless=(),
        models="models",
        folders=(("*/lora", None), ("*/control_lora", None)),
    ),
}

LAUNCHER = "webui-user.bat" if os.name == "nt" else "webui-user.sh"
"""The A1111/Forge launcher that sets ``COMMANDLINE_ARGS`` on this system."""

WEBUI_PATH_OPTIONS = ("--data-dir", "--models-dir", "--lora-dir", "--lyco-dir-backcompat", "--forge-ref-a1111-home")
OPTION_ALIASES: Mapping[str, str] = {"--lyco-dir": "--lyco-dir-backcompat"}
"""argparse accepts a unique prefix of an option; this one is documented in A1111's own help text."""

FORGE_A1111_LORA = "models/lora"
"""What ``--forge-ref-a1111-home`` appends to the A1111 home, spelled as Forge spells it."""

COMFYUI_EXTRA_PATHS = "extra_model_paths.yaml"
COMFYUI_LORA_KEY = "loras"
INVOKEAI_CONFIG = "invokeai.yaml"
INVOKEAI_MODELS_KEY = "models_dir"
INVOKEAI_MODEL_KEY = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""The folder name of one model in InvokeAI 6.10+ (``uuid4``)."""


def lora_folders(tool: str, root: Path) -> list[Path]:
    """The folders ``tool`` reads LoRA-family files from, for its install at ``root``.

    Only folders that exist, resolved, sorted and each once; a folder inside another one returned is left out, since
    the tools (and a scan) walk each folder with its subfolders. UnknownChoiceError for a tool not in
    :data:`TOOL_FOLDERS`; PathNotFoundError or NotAFolderError for a ``root`` that is not a folder;
    ToolInstallNotFoundError for a folder that is not that tool's install; ToolConfigError for a configuration file
    that cannot be read the way the tool reads it.
    """
    layout = TOOL_FOLDERS.get(tool)
    if layout is None:
        raise errors.UnknownChoiceError(f"unknown tool {tool!r}; lorahub knows {', '.join(sorted(TOOL_FOLDERS))}")
    install = _install(tool, layout, Path(root))
    if tool in ("a1111", "forge"):
        candidates = _webui_folders(tool, layout, install)
    elif tool == "comfyui":
        candidates = [*_defaults(layout, install / layout.models, {}), *comfyui_extra_lora_paths(install)]
    else:
        candidates = _invokeai_folders(layout, install)
    return _existing(candidates)


def launcher_args(path: Path) -> list[str]:
    """The arguments ``COMMANDLINE_ARGS`` holds after the launcher at ``path`` ran, split as A1111 splits them.

    ``webui-user.sh`` is read as the shell would read its assignments (quotes, ``\\`` continuations,
    ``$COMMANDLINE_ARGS`` appending), ``webui-user.bat`` as cmd would (``set``, ``set "…"``, ``^`` continuations,
    ``%COMMANDLINE_ARGS%``). Every assignment counts, in file order, whatever ``if`` it sits in.
    """
    text = _read_text(path)
    value = _bat_value(text, path) if path.suffix.lower() == ".bat" else _sh_value(text, path)
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise errors.ToolConfigError(f"{path}: COMMANDLINE_ARGS cannot be split into arguments ({exc})") from None


def comfyui_extra_lora_paths(install: Path) -> list[Path]:
    """The ``loras`` folders ``INSTALL/extra_model_paths.yaml`` adds, as ComfyUI joins them (existing or not)."""
    config = install / COMFYUI_EXTRA_PATHS
    if not config.is_file():
        return []
    found: list[Path] = []
    for section, conf in parse_mapping(_read_text(config), str(config)).items():
        if conf is None:
            continue
        if not isinstance(conf, dict):
            raise errors.ToolConfigError(f"{config}: section {section!r} is not a mapping of folder names to paths")
        base = _comfyui_base(config, section, conf)
        entries = conf.get(COMFYUI_LORA_KEY)
        if entries is not None and not isinstance(entries, str):
            raise errors.ToolConfigError(f"{config}: {section}.{COMFYUI_LORA_KEY} is not a path or a `|` block")
        for entry in (entries or "").split("\n"):
            if not entry:
                continue
            if base:
                full = os.path.join(base, entry)
            else:
                full = entry if os.path.isabs(entry) else os.path.abspath(os.path.join(config.parent, entry))
            found.append(Path(os.path.normpath(full)))
    return found


def _comfyui_base(config: Path, section: str, conf: Mapping[str, Value]) -> str | None:
    """A section's ``base_path``, expanded and made absolute from the YAML file's folder; None without one."""
    if "base_path" not in conf:
        return None
    raw = conf["base_path"]
    if not isinstance(raw, str):
        raise errors.ToolConfigError(f"{config}: {section}.base_path is not a path")
    base = os.path.expandvars(os.path.expanduser(raw))
    return base if os.path.isabs(base) else os.path.abspath(os.path.join(config.parent, base))


# --- each tool ---------------------------------------------------------------------------------------------------


def _install(tool: str, layout: ToolLayout, root: Path) -> Path:
    where = f"Give the folder {layout.name} is installed in."
    if not root.exists():
        raise errors.PathNotFoundError(f"{root}: no such folder", hint=where)
    if not root.is_dir():
        raise errors.NotAFolderError(f"{root} is not a folder", hint=where)
    install = root.resolve()
    missing = [marker for marker in layout.markers if not (install / marker).exists()]
    other = [marker for marker in layout.unless if (install / marker).exists()]
    if missing or other:
        reason = f"it has no {' or '.join(missing)}" if missing else f"it has {' and '.join(other)}"
        alike = [name for name, each in TOOL_FOLDERS.items() if name != tool and _is_install(install, each)]
        hint = f"It looks like a {TOOL_FOLDERS[alike[0]].name} install: name that tool ({alike[0]})." if alike else None
        raise errors.ToolInstallNotFoundError(f"{root} is not a {layout.name} install: {reason}", hint=hint)
    return install


def _is_install(folder: Path, layout: ToolLayout) -> bool:
    return all((folder / m).exists() for m in layout.markers) and not any((folder / m).exists() for m in layout.unless)


def _defaults(layout: ToolLayout, models: Path, options: Mapping[str, Path]) -> list[Path]:
    found: list[Path] = []
    for pattern, option in layout.folders:
        if option is not None and option in options:
            found.append(options[option])
        elif any(char in pattern for char in "*?["):
            found += sorted(models.glob(pattern))
        else:
            found.append(models / pattern)
    return found


def _webui_folders(tool: str, layout: ToolLayout, install: Path) -> list[Path]:
    launcher = install / LAUNCHER
    args = launcher_args(launcher) if launcher.is_file() else []
    options = {name: install / value for name, value in _options(args, launcher).items()}
    if "--models-dir" in options:
        models = options["--models-dir"]
    elif "--data-dir" in options:
        models = options["--data-dir"] / layout.models
    else:
        models = install / layout.models
    if tool == "forge" and "--lora-dir" not in options and "--forge-ref-a1111-home" in options:
        reference = options["--forge-ref-a1111-home"] / FORGE_A1111_LORA
        if reference.exists():
            options["--lora-dir"] = reference
    return _defaults(layout, models, options)


def _invokeai_folders(layout: ToolLayout, install: Path) -> list[Path]:
    config = install / INVOKEAI_CONFIG
    models = install / (top_level_scalar(_read_text(config), INVOKEAI_MODELS_KEY, str(config)) or layout.models)
    found = _defaults(layout, models, {})
    try:
        names = os.listdir(models)
    except (FileNotFoundError, NotADirectoryError):
        names = []
    except OSError as exc:
        raise errors.FileReadError(f"{models}: {exc.strerror}") from None
    if any(INVOKEAI_MODEL_KEY.fullmatch(name) and (models / name).is_dir() for name in names):
        found.append(models)
    return found


def _existing(candidates: Iterable[Path]) -> list[Path]:
    folders = sorted({path.resolve() for path in candidates if path.is_dir()})
    kept: set[Path] = set()
    for folder in folders:
        if not any(parent in kept for parent in folder.parents):
            kept.add(folder)
    return sorted(kept)


# --- launchers -----------------------------------------------------------------------------------------------------

_SH_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?COMMANDLINE_ARGS=(?P<value>.*)$", re.DOTALL)
_SH_SELF = re.compile(r"\$\{COMMANDLINE_ARGS\}|\$COMMANDLINE_ARGS\b")
_BAT_COMMENT = re.compile(r"^@?(?:rem(?:\s|$)|::)", re.IGNORECASE)
_BAT_ASSIGNMENT = re.compile(r'^@?set\s+(?P<quoted>")?COMMANDLINE_ARGS=(?P<value>.*)$', re.IGNORECASE | re.DOTALL)
_BAT_SELF = re.compile(r"%COMMANDLINE_ARGS%", re.IGNORECASE)


def _sh_value(text: str, path: Path) -> str:
    value = ""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        number, line = index + 1, lines[index]
        index += 1
        while line.endswith("\\") and index < len(lines):
            line, index = line[:-1] + lines[index], index + 1
        match = _SH_ASSIGNMENT.match(line)
        if match is None or line.lstrip().startswith("#"):
            continue
        assigned = match["value"]
        while (words := _sh_words(assigned)) is None and index < len(lines):  # a quoted value over several lines
            assigned, index = assigned + "\n" + lines[index], index + 1
        if words is None:
            raise errors.ToolConfigError(f"{path}, line {number}: COMMANDLINE_ARGS has a quote that is never closed")
        if len(words) > 1:
            raise errors.ToolConfigError(
                f"{path}, line {number}: COMMANDLINE_ARGS= is followed by unquoted spaces",
                hint='Quote the whole value: export COMMANDLINE_ARGS="--lora-dir /path/to/loras".',
            )
        value = _substitute(_SH_SELF, words[0] if words else "", value)
    return value


def _sh_words(text: str) -> list[str] | None:
    try:
        return shlex.split(text, comments=True)
    except ValueError:
        return None


def _bat_value(text: str, path: Path) -> str:
    value = ""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        index += 1
        while line.endswith("^") and index < len(lines):
            line, index = line[:-1] + lines[index].strip(), index + 1
        match = _BAT_ASSIGNMENT.match(line)
        if match is None or _BAT_COMMENT.match(line):
            continue
        assigned = match["value"]
        if match["quoted"]:
            assigned = assigned[: assigned.rfind('"')] if '"' in assigned else assigned
        value = _substitute(_BAT_SELF, assigned, value)
    return value


def _substitute(variable: re.Pattern[str], text: str, previous: str) -> str:
    """``text`` with the launcher's own reference to the variable (appending to it) replaced by its value so far."""
    return variable.sub(lambda _: previous, text)


def _options(args: list[str], source: Path) -> dict[str, str]:
    """The folder options among ``args``, the last one of each winning as in argparse."""
    found: dict[str, str] = {}
    index = 0
    while index < len(args):
        name, equals, inline = args[index].partition("=")
        name = OPTION_ALIASES.get(name, name)
        index += 1
        if name not in WEBUI_PATH_OPTIONS:
            continue
        if equals:
            value = inline
        elif index < len(args) and not args[index].startswith("-"):
            value, index = args[index], index + 1
        else:
            raise errors.ToolConfigError(f"{source}: {name} is not followed by a folder")
        if re.search(r"\$|%[^%]+%", value):
            raise errors.ToolConfigError(
                f"{source}: {name} {value}: lorahub does not run the launcher, so it cannot expand that variable",
                hint="Write the folder itself in COMMANDLINE_ARGS.",
            )
        found[name] = value
    return found


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise errors.PathNotFoundError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise errors.ToolConfigError(f"{path} is not UTF-8 text", hint="Save it as UTF-8.") from None
    except OSError as exc:
        raise errors.FileReadError(f"{path}: {exc.strerror}") from None
