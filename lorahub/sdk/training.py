"""``lorahub.train``: train a LoRA on a diffusers pipeline and catalogue it with its lineage.

The order matters for honesty and for cost: everything that can refuse (settings, signing identity, base,
dataset, consent policy, a checkpoint that does not belong) is checked before torch loads. Then the run trains up
to each checkpoint step, writes the adapter (kohya layout, ``ss_*``/``modelspec.*`` header), catalogues it through
:meth:`Hub.add` with a signed card whose ``training`` field is the lineage, audits it as ``train``, and saves the
resumable state beside it in the home (``training/<run id>/step-<N>/``).
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorahub import errors
from lorahub.sdk.refs import check_name
from lorahub.training.config import TrainConfig, resumed_config
from lorahub.version import __version__

if TYPE_CHECKING:
    from lorahub.consent import Manifest
    from lorahub.registry.runs import NewRun, TrainingRuns
    from lorahub.sdk.adding import AddResult
    from lorahub.sdk.hub import Hub
    from lorahub.signing.card import Parent
    from lorahub.signing.keys import Signer
    from lorahub.training.base import Base
    from lorahub.training.data import Dataset
    from lorahub.training.loop import Step, Trainer
    from lorahub.training.state import SavedState

TRAINING_SCHEMA = "lorahub.training/v1"
RUNS_DIR = "training"


@dataclass(frozen=True)
class TrainResult:
    """The catalogued versions of a run (checkpoints first, the final adapter last) and its lineage record."""

    name: str
    run_id: str
    versions: tuple[AddResult, ...]
    training: dict[str, Any]
    """The final card's ``training`` field."""
    state_dir: Path
    notes: tuple[str, ...] = ()

    @property
    def final(self) -> AddResult:
        return self.versions[-1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "run_id": self.run_id,
            "versions": [{"ref": f"{v.name}@{v.version}", "content_digest": v.content_digest} for v in self.versions],
            "state_dir": str(self.state_dir),
            "notes": list(self.notes),
            "training": self.training,
        }


@dataclass
class _Run:
    """Everything a run needs once the checks have passed."""

    hub: Hub
    signer: Signer
    name: str
    trigger: str | None
    base: Base
    base_digest: str
    dataset: Dataset
    prior: Dataset | None
    config: TrainConfig
    run_id: str
    manifest_path: Path
    started: datetime
    resumed: SavedState | None = None
    parent: Parent | None = None
    versions: list[AddResult] = field(default_factory=list)
    license: str | None = None
    """The licence id the trainer gives the adapter (the card's ``license``; unknown when not given)."""


def train(
    base: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    name: str | None = None,
    trigger: str | None = None,
    config: TrainConfig | None = None,
    prior: str | os.PathLike[str] | None = None,
    sources: str | os.PathLike[str] | None = None,
    manifest: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    hub: Hub | None = None,
    on_step: Callable[[Step], None] | None = None,
    device: str | None = None,
    license: str | None = None,
    **settings: Any,
) -> TrainResult:
    """Train a LoRA on the pipeline folder ``base`` from ``data`` (images + caption .txt files, or a JSONL).

    Settings are :class:`~lorahub.training.config.TrainConfig` fields, given as ``config`` or as keywords
    (``steps=200, rank=8, lr=1e-4``…). ``resume`` (``NAME@V`` of a checkpoint, or its state folder) continues that
    run with its own settings (``steps``, ``save_every`` and ``log_every`` may change). ``on_step`` is called after
    every optimizer step with a :class:`~lorahub.training.loop.Step`. Returns the catalogued versions.
    """
    from lorahub.sdk.hub import Hub

    hub = hub or Hub.open()
    requested = _config(config, settings)
    run = _prepare(
        hub, base_path=Path(base), data=Path(data), name=name, trigger=trigger, requested=requested, prior=prior,
        sources=sources, manifest=manifest, resume=resume,
    )  # fmt: skip
    run.license = license
    runs = training_runs(hub)
    runs.start(_new_run(run))
    try:
        trainer = _trainer(run, device)
        _train_and_checkpoint(run, trainer, on_step)
    except BaseException:
        runs.fail(run.run_id)  # the row says the run died; its catalogued checkpoints stay resumable
        raise
    last = run.versions[-1]
    assert last.signed is not None and last.signed.card.training is not None
    return TrainResult(
        name=run.name,
        run_id=run.run_id,
        versions=tuple(run.versions),
        training=last.signed.card.training,
        state_dir=_run_dir(hub, run.run_id),
        notes=tuple(trainer.notes),
    )


def training_runs(hub: Hub) -> TrainingRuns:
    """The home's training-run rows (progress of every run: running, finished or failed)."""
    from lorahub.registry.runs import TrainingRuns

    return TrainingRuns(hub.catalog.engine)


def _train_and_checkpoint(run: _Run, trainer: Trainer, on_step: Callable[[Step], None] | None) -> None:
    from lorahub.training.loop import iterate_steps

    for stop in iterate_steps(run.config.steps, run.config.save_every):
        if stop <= trainer.run.step:
            continue
        trainer.train(stop, on_step)
        _checkpoint(run, trainer, final=stop == run.config.steps)


def _new_run(run: _Run) -> NewRun:
    from lorahub.registry.runs import NewRun

    return NewRun(
        run_id=run.run_id,
        name=run.name,
        trainer=run.signer.keyid,
        base_name=run.base.name,
        base_weights_digest=run.base_digest,
        dataset_digest=run.dataset.used.digest,
        steps_done=int(run.resumed.info["step"]) if run.resumed is not None else 0,
        steps_total=run.config.steps,
        config=run.config.card_dict(),
        started_at=run.started,
    )


def _config(config: TrainConfig | None, settings: Mapping[str, Any]) -> TrainConfig:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise errors.TrainingError(
            f"unknown training setting(s): {', '.join(unknown)}", hint=f"Known: {', '.join(sorted(known))}."
        )
    values = dict(settings)
    if "targets" in values:
        values["targets"] = tuple(values["targets"])
    return dataclasses.replace(config or TrainConfig(), **values).check()


# --- checks before torch -----------------------------------------------------------------------------------------


def _prepare(
    hub: Hub,
    *,
    base_path: Path,
    data: Path,
    name: str | None,
    trigger: str | None,
    requested: TrainConfig,
    prior: str | os.PathLike[str] | None,
    sources: str | os.PathLike[str] | None,
    manifest: str | os.PathLike[str] | None,
    resume: str | os.PathLike[str] | None,
) -> _Run:
    from lorahub.training.base import describe_base, weights_digest
    from lorahub.training.data import read_dataset

    signer = hub.signer()  # no identity, no signed lineage: refuse before hours of training
    resumed, parent, resumed_name = _resume_point(hub, resume) if resume is not None else (None, None, None)
    config = requested
    if resumed is not None:
        config = resumed_config(TrainConfig.from_card_dict(resumed.info["config"]), requested).check()
        if config.steps <= int(resumed.info["step"]):
            raise errors.TrainingError(
                f"the checkpoint is at step {resumed.info['step']} of {config.steps}: nothing to train",
                hint="Pass a larger --steps to continue the run.",
            )
        trigger = trigger or resumed.info.get("trigger")
    final_name = check_name(name or resumed_name or _default_name(data))
    base = describe_base(base_path)
    base_digest = weights_digest(base_path)
    dataset = read_dataset(
        data, trigger=trigger, sources=Path(sources) if sources else None, manifest=Path(manifest) if manifest else None
    )
    prior_set = read_dataset(Path(prior)) if prior is not None else None
    _check_policy(hub, dataset, prior_set)
    if resumed is not None:
        _check_same_run(resumed, base_digest, dataset, prior_set)
    run_id = str(resumed.info["run_id"]) if resumed is not None else uuid.uuid4().hex
    manifest_path = _write_manifest(hub, run_id, dataset, prior_set)
    started = _parse_time(resumed.info["started_at"]) if resumed is not None else datetime.now(UTC)
    return _Run(
        hub, signer, final_name, trigger, base, base_digest, dataset, prior_set, config, run_id, manifest_path,
        started, resumed, parent,
    )  # fmt: skip


def _default_name(data: Path) -> str:
    stem = (data.name if data.is_dir() else data.stem).lower()
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in stem).strip("-._")
    return cleaned or "trained"


def _check_policy(hub: Hub, dataset: Dataset, prior: Dataset | None) -> None:
    """The home policy decides whether images of unknown consent may be trained on (opt-outs never are)."""
    policy = hub.policy()
    unknown = list(dataset.unknown_consent) + [f"prior/{p}" for p in (prior.unknown_consent if prior else ())]
    if policy.require_known_consent and unknown:
        raise errors.ConsentRefusedError(
            f"the home policy ({policy.source}) requires known consent, and {len(unknown)} image(s) have none: "
            f"{', '.join(unknown[:5])}"
        )


def _resume_point(hub: Hub, resume: str | os.PathLike[str]) -> tuple[SavedState, Parent, str | None]:
    """The checkpoint state to continue from, the card parent naming it, and the adapter name it belongs to."""
    from lorahub.signing.card import Parent
    from lorahub.training.state import read_state

    path = Path(resume)
    if path.is_dir():
        saved = read_state(path)
        version = hub.catalog.find_by_content(str(saved.info["adapter_digest"]))
        if version is None:
            raise errors.TrainingError(
                f"the checkpoint in {path} is not catalogued in this home", hint="Resume by NAME@V instead."
            )
    else:
        version = hub.version(str(resume))
        training = hub.signed_card(version).card.training
        if not training or training.get("schema") != TRAINING_SCHEMA:
            raise errors.TrainingError(
                f"{version.ref} was not trained by lorahub: there is no run to resume",
                hint="Resume a version catalogued by `lorahub train` (see `lorahub show NAME`).",
            )
        saved = read_state(hub.settings.home / str(training["state"]))
    if saved.info.get("adapter_digest") != version.content_digest:
        raise errors.TrainingError(f"the saved state of {version.ref} belongs to another adapter")
    parent = Parent(
        digest=version.content_digest,
        relation="resumed-from",
        parameters={"ref": version.ref, "run_id": saved.info["run_id"], "step": int(saved.info["step"])},
    )
    return saved, parent, version.name


def _check_same_run(saved: SavedState, base_digest: str, dataset: Dataset, prior: Dataset | None) -> None:
    expected = {
        "base weights": (saved.info["base_weights_digest"], base_digest),
        "dataset": (saved.info["dataset_digest"], dataset.used.digest),
        "prior images": (saved.info.get("prior_digest"), prior.used.digest if prior else None),
    }
    changed = [what for what, (before, now) in expected.items() if before != now]
    if changed:
        raise errors.TrainingError(
            f"a resumed run must train on the same base and data; changed: {', '.join(changed)}",
            hint="Pass the same --base, --data and --prior as the run's first part, or start a new run.",
        )


def _write_manifest(hub: Hub, run_id: str, dataset: Dataset, prior: Dataset | None) -> Path:
    """The manifest of the images trained on (prior images under ``prior/``), kept with the run: the card pins it."""
    path = _run_dir(hub, run_id) / "dataset.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    _combined(dataset, prior).write(path)
    return path


def _combined(dataset: Dataset, prior: Dataset | None) -> Manifest:
    if prior is None:
        return dataset.used
    prior_items = tuple(dataclasses.replace(i, path=f"prior/{i.path}") for i in prior.used.items)
    items = tuple(sorted(dataset.used.items + prior_items, key=lambda i: i.path))
    return dataclasses.replace(dataset.used, items=items)


def _run_dir(hub: Hub, run_id: str) -> Path:
    return hub.settings.home / RUNS_DIR / run_id


# --- training ------------------------------------------------------------------------------------------------------


def _trainer(run: _Run, device: str | None) -> Trainer:
    from lorahub.training.loop import Trainer
    from lorahub.training.state import restore_state

    prior = run.prior.examples if run.prior else ()
    trainer = Trainer(run.base, run.config, run.dataset.examples, prior=prior, device=device)
    if run.resumed is not None:
        restore_state(trainer, run.resumed)
    return trainer


def _checkpoint(run: _Run, trainer: Trainer, *, final: bool) -> None:
    """Write the adapter, catalogue it with its card, then save the resumable state beside it."""
    from lorahub.sdk.adding import AddOptions
    from lorahub.training.state import save_state
    from lorahub.training.writer import kohya_metadata, write_adapter

    step = trainer.run.step
    directory = _run_dir(run.hub, run.run_id) / f"step-{step}"
    directory.mkdir(parents=True, exist_ok=True)
    finished = datetime.now(UTC)
    facts = _facts(run, trainer, finished)
    path = directory / f"{run.name}-step{step}.safetensors"
    layout = write_adapter(
        path,
        trainer.lora_state(),
        base=run.base,
        rank=run.config.rank,
        alpha=run.config.network_alpha,
        dtype=trainer.precision.used,
        metadata=kohya_metadata(facts),
    )
    training = _training_record(run, trainer, finished, layout=layout, final=final, state=directory)
    options = AddOptions(
        name=run.name,
        base_model=run.base.name,
        base_weights_digest=run.base_digest,
        license=run.license,
        triggers=[run.trigger] if run.trigger else [],
        consent=run.manifest_path,
        training=training,
        lineage=(run.parent,) if run.parent is not None else (),
        tags=["trained", "checkpoint"] if not final else ["trained"],
        audit_action="train",
        audit_details={"run_id": run.run_id, "step": step, "steps": run.config.steps, "final": final},
    )
    result = run.hub.add(path, options)
    path.unlink(missing_ok=True)  # the blob store keeps the bytes
    save_state(trainer, directory, _state_info(run, result.content_digest))
    run.versions.append(result)
    training_runs(run.hub).checkpoint(
        run.run_id, step=step, version=result.version, digest=result.content_digest, final=final
    )


def _state_info(run: _Run, adapter_digest: str) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "name": run.name,
        "trigger": run.trigger,
        "config": run.config.card_dict(),
        "adapter_digest": adapter_digest,
        "base_weights_digest": run.base_digest,
        "dataset_digest": run.dataset.used.digest,
        "prior_digest": run.prior.used.digest if run.prior else None,
        "started_at": _timestamp(run.started),
    }


def _facts(run: _Run, trainer: Trainer, finished: datetime) -> dict[str, Any]:
    """What the kohya header needs, in one place."""
    captions = [e.caption for e in run.dataset.examples]
    tags = Counter(tag.strip() for caption in captions for tag in caption.split(",") if tag.strip())
    return {
        "run_id": run.run_id,
        "name": run.name,
        "trigger": run.trigger,
        "author": run.signer.identity.user_id,
        "lorahub_version": __version__,
        "config": run.config.card_dict() | {"targets": list(trainer.targets)},
        "targets": list(trainer.targets),
        "base": run.base.card_dict(run.base_digest),
        "optimizer": trainer.optimizer_name,
        "precision_used": trainer.precision.used,
        "step": trainer.run.step,
        "images": len(run.dataset.examples),
        "prior_images": len(run.prior.examples) if run.prior else 0,
        "dataset_dir": Path(run.dataset.examples[0].path).parent.name,
        "tag_frequency": {Path(run.dataset.examples[0].path).parent.name: dict(tags.most_common(200))},
        "started_epoch": str(int(run.started.timestamp())),
        "finished_epoch": str(int(finished.timestamp())),
        "finished_at": _timestamp(finished),
    }


def _training_record(
    run: _Run, trainer: Trainer, finished: datetime, *, layout: str, final: bool, state: Path
) -> dict[str, Any]:
    """The card's ``training`` field: the lineage of this version (no floats: the card's rule)."""
    from lorahub.training.environment import hardware, software

    config, versions = run.config, software()
    hyper = config.card_dict() | {"targets": list(trainer.targets), "optimizer": trainer.optimizer_name}
    return {
        "schema": TRAINING_SCHEMA,
        "run_id": run.run_id,
        "final": final,
        "trainer": {
            "tool": "lorahub",
            "version": __version__,
            "git_commit": versions["lorahub_git_commit"],
            "identity": {"fingerprint": run.signer.keyid, "name": run.signer.identity.user_id},
        },
        "base_model": run.base.card_dict(run.base_digest),
        "objective": run.base.prediction_type,
        "dataset": run.dataset.card_dict() | {"trigger": run.trigger},
        "consent_manifest": {
            "path": run.manifest_path.relative_to(run.hub.settings.home).as_posix(),
            "digest": _combined(run.dataset, run.prior).digest,
        },
        "prior": run.prior.card_dict() if run.prior else None,
        "hyperparameters": hyper,
        "seed": config.seed,
        "precision": {"requested": trainer.precision.requested, "used": trainer.precision.used},
        "steps": {"done": trainer.run.step, "total": config.steps},
        "software": versions,
        "hardware": hardware(trainer.torch, trainer.device),
        "started_at": _timestamp(run.started),
        "finished_at": _timestamp(finished),
        "loss_curve": loss_curve(trainer.run.losses, config.log_every),
        "resumed_from": run.parent.parameters | {"digest": run.parent.digest} if run.parent else None,
        "output": {"layout": layout, "dtype": {"no": "fp32"}.get(trainer.precision.used, trainer.precision.used)},
        "state": state.relative_to(run.hub.settings.home).as_posix(),
        "notes": list(trainer.notes),
    }


def loss_curve(losses: Sequence[float], every: int) -> dict[str, Any]:
    """``{"every": N, "points": [[step, "mean loss of the N steps up to it"], …]}`` (the last step included)."""
    points = []
    for start in range(0, len(losses), every):
        window = losses[start : start + every]
        points.append([start + len(window), f"{sum(window) / len(window):.6g}"])
    return {"every": every, "points": points}


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
