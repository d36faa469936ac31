"""``lorahub.train``: train a LoRA on a diffusers pipeline and catalogue it with its lineage.

The order matters for honesty and for cost: everything that can refuse (settings, signing identity, base,
dataset, consent policy, a checkpoint that does not belong) is checked before torch loads. Then the run trains up
to each checkpoint step, writes the adapter (kohya layout, ``ss_*``/``modelspec.*`` header), catalogues it through
:meth:`Hub.add` with a signed card whose ``training`` field is the lineage, audits it as ``train``, and saves the
resumable state beside it in the home (``training/<run id>/step-<N>/``).

Data parallel (``processes`` > 1, or under ``accelerate launch``): every process trains its slice of each batch
(:mod:`lorahub.training.distributed`); only the main process writes, catalogues and records. ``processes`` > 1
outside a launcher makes this process the main one and starts the others as ``python -m
lorahub.sdk.training_worker SPEC``, which calls :func:`train` with the same arguments.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Never

from lorahub import errors
from lorahub.sdk.refs import check_name
from lorahub.signing.timestamps import utc_timestamp
from lorahub.training import distributed
from lorahub.training.config import MixedPrecision, Network, Quantization, Scheduler, TrainConfig, resumed_config
from lorahub.unset import UNSET, Unset, given
from lorahub.version import __version__

if TYPE_CHECKING:
    from lorahub.consent import Manifest
    from lorahub.registry.runs import RunRecord, TrainingRuns
    from lorahub.sdk.adding import AddResult
    from lorahub.sdk.hub import Hub
    from lorahub.signing.card import Parent
    from lorahub.signing.keys import Signer
    from lorahub.training.base import Base
    from lorahub.training.data import Dataset
    from lorahub.training.distributed import World
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
    samples: tuple[dict[str, Any], ...] = ()
    """The sample images this call rendered (step, index, prompt, seed, path, sha256, adapter ref or None)."""

    @property
    def final(self) -> AddResult:
        return self.versions[-1]

    @property
    def main_process(self) -> bool:
        """False in the other processes of a data-parallel run: they catalogue nothing and hold no versions."""
        return bool(self.versions)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "run_id": self.run_id,
            "versions": [{"ref": f"{v.name}@{v.version}", "content_digest": v.content_digest} for v in self.versions],
            "state_dir": str(self.state_dir),
            "notes": list(self.notes),
            "samples": list(self.samples),
            "training": self.training,
        }


@dataclass
class _Run:
    """Everything a run needs once the checks have passed. ``record`` is the run's one record: the catalog row,
    ``state.json`` and each card's ``training`` field take the run's facts from it."""

    hub: Hub
    signer: Signer
    record: RunRecord
    trigger: str | None
    base: Base
    dataset: Dataset
    prior: Dataset | None
    config: TrainConfig
    manifest_path: Path
    resumed: SavedState | None = None
    parent: Parent | None = None
    versions: list[AddResult] = field(default_factory=list)
    license: str | None = None
    """The licence id the trainer gives the adapter (the card's ``license``; unknown when not given)."""
    notes: tuple[str, ...] = ()
    """Where the settings came from and what could not be mapped (the card's ``training.notes``, first)."""
    samples: list[dict[str, Any]] = field(default_factory=list)


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
    rank: int | Unset = UNSET,
    alpha: float | Unset | None = UNSET,
    targets: Sequence[str] | Unset = UNSET,
    steps: int | Unset = UNSET,
    lr: float | Unset = UNSET,
    scheduler: Scheduler | Unset = UNSET,
    warmup: int | Unset = UNSET,
    batch: int | Unset = UNSET,
    grad_accum: int | Unset = UNSET,
    resolution: int | Unset = UNSET,
    mixed_precision: MixedPrecision | Unset = UNSET,
    gradient_checkpointing: bool | Unset = UNSET,
    cache_latents: bool | Unset = UNSET,
    seed: int | Unset = UNSET,
    save_every: int | Unset = UNSET,
    log_every: int | Unset = UNSET,
    prior_weight: float | Unset = UNSET,
    weight_decay: float | Unset = UNSET,
    max_grad_norm: float | Unset = UNSET,
    adam_betas: tuple[float, float] | Unset = UNSET,
    adam_epsilon: float | Unset = UNSET,
    network: Network | Unset = UNSET,
    lokr_factor: int | Unset = UNSET,
    train_text_encoder: bool | Unset = UNSET,
    text_encoder_lr: float | Unset | None = UNSET,
    ema_decay: float | Unset | None = UNSET,
    processes: int | Unset = UNSET,
    sample_prompts: Sequence[str] | os.PathLike[str] | Unset = UNSET,
    sample_every: int | Unset = UNSET,
    quantization: Quantization | Unset | None = UNSET,
    extra: dict[str, Any] | Unset = UNSET,
    buckets: bool | Unset = UNSET,
    bucket_step: int | Unset = UNSET,
    min_bucket: int | Unset | None = UNSET,
    max_bucket: int | Unset | None = UNSET,
    bucket_no_upscale: bool | Unset = UNSET,
    random_crop: bool | Unset = UNSET,
    shuffle_captions: bool | Unset = UNSET,
    keep_tokens: int | Unset = UNSET,
    caption_dropout: float | Unset = UNSET,
    noise_offset: float | Unset = UNSET,
    min_snr_gamma: float | Unset | None = UNSET,
    notes: Sequence[str] = (),
    **unknown: Never,
) -> TrainResult:
    """Train a LoRA on the pipeline folder ``base`` from ``data`` (images + caption .txt files, or a JSONL).

    The settings from ``rank`` on are the :class:`~lorahub.TrainConfig` fields of the same names
    (documented there); one given here replaces ``config``'s, one left out keeps it (or the TrainConfig default).
    ``resume`` (``NAME@V`` of a checkpoint, or its state folder) continues that run with its own settings
    (``steps``, ``save_every``, ``log_every`` and the sample settings may change). ``on_step`` is called after
    every optimizer step with a :class:`~lorahub.Step`. ``sample_prompts`` is a list of prompt lines, or the path
    of a prompts file (a :class:`~pathlib.Path`; a bare string is refused, being ambiguous). ``notes`` are
    recorded first in the card's ``training.notes`` (where the settings came from:
    :func:`lorahub.sdk.train_settings.train_from` says so there). Returns the catalogued versions. Any other
    keyword is refused with a :class:`~lorahub.errors.TrainingError` that lists the known settings (``unknown``
    exists for that message; type checkers refuse such keywords already).
    """
    from lorahub.sdk.hub import Hub

    hub = hub or Hub.open()
    settings = given(
        rank=rank, alpha=alpha, targets=targets, steps=steps, lr=lr, scheduler=scheduler, warmup=warmup, batch=batch,
        grad_accum=grad_accum, resolution=resolution, mixed_precision=mixed_precision,
        gradient_checkpointing=gradient_checkpointing, cache_latents=cache_latents, seed=seed, save_every=save_every,
        log_every=log_every, prior_weight=prior_weight, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
        adam_betas=adam_betas, adam_epsilon=adam_epsilon, network=network, lokr_factor=lokr_factor,
        train_text_encoder=train_text_encoder, text_encoder_lr=text_encoder_lr, ema_decay=ema_decay,
        processes=processes, extra=extra, buckets=buckets, bucket_step=bucket_step,
        min_bucket=min_bucket, max_bucket=max_bucket, bucket_no_upscale=bucket_no_upscale, random_crop=random_crop,
        shuffle_captions=shuffle_captions, keep_tokens=keep_tokens, caption_dropout=caption_dropout,
        noise_offset=noise_offset, min_snr_gamma=min_snr_gamma, sample_prompts=sample_prompts,
        sample_every=sample_every, quantization=quantization,
    )  # fmt: skip
    requested = _config(config, settings | unknown, whole=resume is None)
    arguments = {
        "base": str(base), "data": str(data), "name": name, "trigger": trigger, "prior": prior, "sources": sources,
        "manifest": manifest, "resume": resume, "device": device, "license": license,
    }  # fmt: skip
    if requested.processes > 1 and distributed.launched_size() == 1:
        return _spawned(hub, requested, arguments, on_step)
    world = distributed.join(device)
    if world.size > 1:
        requested = dataclasses.replace(requested, processes=world.size)
    run = _prepare(
        hub, base_ref=base, data=Path(data), name=name, trigger=trigger, requested=requested, prior=prior,
        sources=sources, manifest=manifest, resume=resume, main=world.main,
    )  # fmt: skip
    run.license = license
    run.notes = tuple(notes)
    runs = training_runs(hub)
    if world.main:
        runs.start(run.record)
    try:
        trainer = _trainer(run, device)
        _train_and_checkpoint(run, trainer, on_step)
    except BaseException:  # any end but success, Ctrl-C included; re-raised, never handled here
        if world.main:
            runs.fail(run.record.run_id)  # the row says the run died; its catalogued checkpoints stay resumable
        distributed.leave(world, ok=False)
        raise
    distributed.leave(world, ok=True)
    if not world.main:
        return TrainResult(run.record.name, run.record.run_id, (), {}, _run_dir(hub, run.record.run_id))
    last = run.versions[-1]
    assert last.signed is not None and last.signed.card.training is not None
    return TrainResult(
        name=run.record.name,
        run_id=run.record.run_id,
        versions=tuple(run.versions),
        training=last.signed.card.training,
        state_dir=_run_dir(hub, run.record.run_id),
        notes=run.notes + tuple(trainer.notes),
        samples=tuple(run.samples),
    )


def _spawned(
    hub: Hub, config: TrainConfig, arguments: dict[str, Any], on_step: Callable[[Step], None] | None
) -> TrainResult:
    """This process as the main one of ``config.processes``, the others started on the same arguments."""
    spec = {"home": str(hub.settings.home), "config": config.card_dict(), "extra": config.extra}
    spec |= {key: (str(value) if isinstance(value, os.PathLike) else value) for key, value in arguments.items()}
    with tempfile.TemporaryDirectory(prefix="lorahub-train-") as folder:
        path = Path(folder) / "spec.json"
        path.write_text(json.dumps(spec), encoding="utf-8")
        command = [sys.executable, "-m", "lorahub.sdk.training_worker", str(path)]
        with distributed.spawned(config.processes, command):
            return train(hub=hub, config=config, on_step=on_step, **arguments)


def training_runs(hub: Hub) -> TrainingRuns:
    """The home's training-run rows (progress of every run: running, finished or failed)."""
    from lorahub.registry.runs import TrainingRuns

    return TrainingRuns(hub.catalog.engine)


def _train_and_checkpoint(run: _Run, trainer: Trainer, on_step: Callable[[Step], None] | None) -> None:
    """Train to each checkpoint or sample step; catalogue at a checkpoint, then sample (the samples name it)."""
    from lorahub.sdk.samples import SAMPLES_DIR, write_samples
    from lorahub.training.loop import iterate_steps
    from lorahub.training.samples import sample_steps

    config = run.config
    checkpoints = set(iterate_steps(config.steps, config.save_every))
    samples = set(sample_steps(config.steps, config.sample_every)) if trainer.image_sampler is not None else set()
    for stop in sorted(checkpoints | samples):
        if stop <= trainer.run.step:
            continue
        trainer.train(stop, on_step if trainer.world.main else None)
        if not trainer.world.main:
            continue
        if stop in checkpoints:
            _checkpoint(run, trainer, final=stop == config.steps)
        if stop in samples:
            directory = _run_dir(run.hub, run.record.run_id) / SAMPLES_DIR
            version = run.versions[-1] if stop in checkpoints else None
            entries = write_samples(
                run.hub, trainer, record=run.record, base=run.base, directory=directory, version=version
            )
            run.samples += [e | {"path": str(run.hub.settings.home / e["path"])} for e in entries]


def _config(config: TrainConfig | None, settings: Mapping[str, Any], *, whole: bool) -> TrainConfig:
    """The requested settings; checked here unless they only change a resumed run (``whole`` False), whose
    settings are checked once merged with the checkpoint's (``--sample-every`` alone then uses its prompts)."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise errors.TrainingError(
            f"unknown training setting(s): {', '.join(unknown)}", hint=f"Known: {', '.join(sorted(known))}."
        )
    values = dict(settings)
    if "targets" in values:
        values["targets"] = tuple(values["targets"])
    if "sample_prompts" in values:
        values["sample_prompts"] = _prompt_lines(values["sample_prompts"])
    requested = dataclasses.replace(config or TrainConfig(), **values)
    return requested.check() if whole else requested


def _prompt_lines(value: Any) -> tuple[str, ...]:
    from lorahub.training.samples import read_prompt_file

    if isinstance(value, str):
        raise errors.TrainingError(
            "sample_prompts is a single string: is it a prompt or a file?",
            hint="Give a list of prompts, or a pathlib.Path to a prompts file (one prompt per line).",
        )
    if isinstance(value, os.PathLike):
        return read_prompt_file(Path(value))
    return tuple(value)


# --- checks before torch -----------------------------------------------------------------------------------------


def _prepare(
    hub: Hub,
    *,
    base_ref: str | os.PathLike[str],
    data: Path,
    name: str | None,
    trigger: str | None,
    requested: TrainConfig,
    prior: str | os.PathLike[str] | None,
    sources: str | os.PathLike[str] | None,
    manifest: str | os.PathLike[str] | None,
    resume: str | os.PathLike[str] | None,
    main: bool = True,
) -> _Run:
    from lorahub.files.bases import locate_base
    from lorahub.registry.runs import RunRecord
    from lorahub.training.base import describe_base, weights_digest
    from lorahub.training.data import read_dataset
    from lorahub.training.quantised import check_quantization
    from lorahub.training.weighting import check_objective

    signer = hub.signer()  # no identity, no signed lineage: refuse before hours of training
    hub.require("train", signer.keyid)  # nor without the role, in a team
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
    location = locate_base(base_ref)
    base = describe_base(location.path, location.name, revision=location.revision)
    check_objective(config, base.prediction_type)
    check_quantization(config.quantization, base)
    base_digest = weights_digest(location.path)
    dataset = read_dataset(
        data, trigger=trigger, sources=Path(sources) if sources else None, manifest=Path(manifest) if manifest else None
    )
    prior_set = read_dataset(Path(prior)) if prior is not None else None
    _check_policy(hub, dataset, prior_set)
    if resumed is not None:
        _check_same_run(resumed, base_digest, dataset, prior_set)
    record = RunRecord(
        run_id=str(resumed.info["run_id"]) if resumed is not None else uuid.uuid4().hex,
        name=final_name,
        trainer=signer.keyid,
        base_name=base.name,
        base_weights_digest=base_digest,
        dataset_digest=dataset.used.digest,
        steps_done=int(resumed.info["step"]) if resumed is not None else 0,
        steps_total=config.steps,
        config=config.card_dict(),
        started_at=_parse_time(resumed.info["started_at"]) if resumed is not None else datetime.now(UTC),
    )
    manifest_path = _write_manifest(hub, record.run_id, dataset, prior_set, write=main)
    return _Run(
        hub=hub, signer=signer, record=record, trigger=trigger, base=base, dataset=dataset, prior=prior_set,
        config=config, manifest_path=manifest_path, resumed=resumed, parent=parent,
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


def _write_manifest(hub: Hub, run_id: str, dataset: Dataset, prior: Dataset | None, *, write: bool) -> Path:
    """The manifest of the images trained on (prior images under ``prior/``), kept with the run: the card pins it.
    Only the main process of a data-parallel run writes."""
    path = _run_dir(hub, run_id) / "dataset.json"
    if not write:
        return path
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
    record = dataclasses.replace(run.record, steps_done=step)
    run.record = record
    directory = _run_dir(run.hub, record.run_id) / f"step-{step}"
    directory.mkdir(parents=True, exist_ok=True)
    finished = datetime.now(UTC)
    facts = _facts(run, trainer, finished)
    path = directory / f"{record.name}-step{step}.safetensors"
    layout = write_adapter(
        path,
        trainer.adapter_states(),
        trainer.module_scales(),
        base=run.base,
        dtype=trainer.precision.used,
        metadata=kohya_metadata(facts),
    )
    training = _training_record(run, trainer, finished, layout=layout, final=final, state=directory)
    options = AddOptions(
        name=record.name,
        base_model=record.base_name,
        base_weights_digest=record.base_weights_digest,
        license=run.license,
        triggers=[run.trigger] if run.trigger else [],
        consent=run.manifest_path,
        training=training,
        lineage=(run.parent,) if run.parent is not None else (),
        tags=["trained", "checkpoint"] if not final else ["trained"],
        audit_action="train",
        audit_details={"run_id": record.run_id, "step": step, "steps": record.steps_total, "final": final},
    )
    result = run.hub.add(path, options)
    path.unlink(missing_ok=True)  # the blob store keeps the bytes
    save_state(trainer, directory, _state_info(run, result.content_digest))
    run.versions.append(result)
    training_runs(run.hub).checkpoint(
        record.run_id, step=step, version=result.version, digest=result.content_digest, final=final
    )


def _state_info(run: _Run, adapter_digest: str) -> dict[str, Any]:
    """What ``state.json`` keeps of the run: what a resume reads back to rebuild its record and to check that it
    continues on the same base and data."""
    record = run.record
    return {
        "run_id": record.run_id,
        "name": record.name,
        "trigger": run.trigger,
        "config": record.config,
        "adapter_digest": adapter_digest,
        "base_weights_digest": record.base_weights_digest,
        "dataset_digest": record.dataset_digest,
        "prior_digest": run.prior.used.digest if run.prior else None,
        "started_at": utc_timestamp(record.started_at),
    }


def _facts(run: _Run, trainer: Trainer, finished: datetime) -> dict[str, Any]:
    """What the kohya header needs, in one place."""
    from lorahub.training.kohya import dataset_dirs

    record = run.record
    dataset_folder = run.dataset.examples[0].path.parents[len(Path(run.dataset.examples[0].rel).parts) - 1].name
    captions = [e.caption for e in run.dataset.examples]
    tags = Counter(tag.strip() for caption in captions for tag in caption.split(",") if tag.strip())
    return {
        "run_id": record.run_id,
        "name": record.name,
        "trigger": run.trigger,
        "author": run.signer.identity.user_id,
        "lorahub_version": __version__,
        "config": record.config | {"targets": list(trainer.targets)},
        "text_encoders": list(trainer.text_encoders),
        "targets": list(trainer.targets),
        "base": run.base.card_dict(record.base_weights_digest),
        "optimizer": trainer.optimizer_name,
        "precision_used": trainer.precision.used,
        "step": record.steps_done,
        "images": len(run.dataset.examples),
        "prior_images": len(run.prior.examples) if run.prior else 0,
        "dataset_dirs": dataset_dirs(dataset_folder, [(e.rel, e.repeats) for e in run.dataset.examples]),
        "bucket_sides": run.config.bucket_sides,
        "tag_frequency": {dataset_folder: dict(tags.most_common(200))},
        "started_epoch": str(int(record.started_at.timestamp())),
        "finished_epoch": str(int(finished.timestamp())),
        "finished_at": utc_timestamp(finished),
    }


def _training_record(
    run: _Run, trainer: Trainer, finished: datetime, *, layout: str, final: bool, state: Path
) -> dict[str, Any]:
    """The card's ``training`` field: the lineage of this version (no floats: the card's rule)."""
    from lorahub.training.buckets import bucket_counts
    from lorahub.training.environment import hardware, software

    record, versions = run.record, software()
    hyper = record.config | {"targets": list(trainer.targets), "optimizer": trainer.optimizer_name}
    hyper |= _network_record(trainer.world, run.config, trainer.text_encoders)
    return {
        "schema": TRAINING_SCHEMA,
        "run_id": record.run_id,
        "final": final,
        "trainer": {
            "tool": "lorahub",
            "version": __version__,
            "git_commit": versions["lorahub_git_commit"],
            "identity": {"fingerprint": record.trainer, "name": run.signer.identity.user_id},
        },
        "base_model": run.base.card_dict(record.base_weights_digest),
        "objective": run.base.prediction_type,
        "dataset": run.dataset.card_dict()
        | {"trigger": run.trigger, "buckets": bucket_counts(trainer.example_buckets)},
        "consent_manifest": {
            "path": run.manifest_path.relative_to(run.hub.settings.home).as_posix(),
            "digest": _combined(run.dataset, run.prior).digest,
        },
        "prior": run.prior.card_dict() if run.prior else None,
        "hyperparameters": hyper,
        "seed": run.config.seed,
        "precision": {"requested": trainer.precision.requested, "used": trainer.precision.used},
        "steps": {"done": record.steps_done, "total": record.steps_total},
        "software": versions,
        "hardware": hardware(trainer.torch, trainer.device),
        "started_at": utc_timestamp(record.started_at),
        "finished_at": utc_timestamp(finished),
        "loss_curve": loss_curve(trainer.run.losses, run.config.log_every),
        "resumed_from": run.parent.parameters | {"digest": run.parent.digest} if run.parent else None,
        "output": {"layout": layout, "dtype": {"no": "fp32"}.get(trainer.precision.used, trainer.precision.used)},
        "state": state.relative_to(run.hub.settings.home).as_posix(),
        "samples": _samples_record(run),
        "notes": list(run.notes) + list(trainer.notes),
    }


def _network_record(world: World, config: TrainConfig, text_encoders: Sequence[str]) -> dict[str, Any]:
    """What the network, text encoders and processes add to the hyperparameters: the effective values."""
    return {
        "world_size": world.size,
        "effective_batch": config.effective_batch,
        "text_encoders": list(text_encoders),
    }


def _samples_record(run: _Run) -> dict[str, Any] | None:
    """Where and how often the run samples (its images name this version; the run's row lists them)."""
    from lorahub.sdk.samples import SAMPLES_DIR
    from lorahub.training.samples import prompt_lines

    if not run.config.sample_prompts:
        return None
    directory = _run_dir(run.hub, run.record.run_id) / SAMPLES_DIR
    return {
        "dir": directory.relative_to(run.hub.settings.home).as_posix(),
        "every": run.config.sample_every,
        "prompts": len(list(prompt_lines(run.config.sample_prompts))),
    }


def loss_curve(losses: Sequence[float], every: int) -> dict[str, Any]:
    """``{"every": N, "points": [[step, "mean loss of the N steps up to it"], …]}`` (the last step included)."""
    points = []
    for start in range(0, len(losses), every):
        window = losses[start : start + every]
        points.append([start + len(window), f"{sum(window) / len(window):.6g}"])
    return {"every": every, "points": points}


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
