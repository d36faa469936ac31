"""Training samples, signed and recorded: the SDK half of :mod:`lorahub.training.samples`.

Each sample image is written beside its run (``training/<run id>/samples/step-<N>-<i>.png`` in the home) and signed
with C2PA Content Credentials through :meth:`Hub.sign_image`, as ``lorahub generate`` signs its images: the base
model by the run's base weights digest (the digest the card records) and the adapter. At a step that was
catalogued, the adapter is that version (name, version, content digest, licence, card signers); at another step it
is the adapter's weights as they were then, by the content digest they would be catalogued under, unversioned.
The generation parameters add the run id and step. Samples are listed in the run's row (``training_run.samples``),
which ``lorahub show`` reads for a version's run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorahub import errors

if TYPE_CHECKING:
    from lorahub.provenance import AdapterUse
    from lorahub.registry.runs import RunRecord, TrainingRuns
    from lorahub.sdk.adding import AddResult
    from lorahub.sdk.hub import Hub
    from lorahub.training.base import Base
    from lorahub.training.loop import Trainer

SAMPLES_DIR = "samples"


def write_samples(
    hub: Hub, trainer: Trainer, *, record: RunRecord, base: Base, directory: Path, version: AddResult | None
) -> list[dict[str, Any]]:
    """Render the sample prompts at the trainer's step, sign each image, and list them in the run's row.
    ``version`` is the checkpoint catalogued at this step, if one was. Returns the entries recorded."""
    from lorahub.provenance import BaseRef
    from lorahub.registry.runs import TrainingRuns

    assert trainer.image_sampler is not None
    step = trainer.run.step
    directory.mkdir(parents=True, exist_ok=True)
    base_ref = BaseRef(base.name, record.base_weights_digest, family=base.family)
    adapter = hub.adapter_use(f"{version.name}@{version.version}") if version else _at_step(trainer, record, base)
    entries = []
    for sample in trainer.image_sampler.images():
        parameters: dict[str, Any] = {"training_run": record.run_id, "training_step": step}
        parameters |= {"guidance_scale": sample.guidance, "width": sample.width, "height": sample.height}
        out = directory / f"step-{step:06d}-{sample.index:02d}.png"
        signed = hub.sign_image(
            sample.image, base=base_ref, adapters=[adapter], out=out, prompt=sample.prompt.prompt,
            negative_prompt=sample.prompt.negative, seed=sample.seed, steps=sample.steps, scheduler=sample.scheduler,
            parameters={k: v for k, v in parameters.items() if v is not None},
        )  # fmt: skip
        entries.append(
            {
                "step": step,
                "index": sample.index,
                "prompt": sample.prompt.prompt,
                "seed": sample.seed,
                "path": out.relative_to(hub.settings.home).as_posix(),
                "sha256": signed.sha256,
                "adapter": adapter.ref if adapter.version is not None else None,
                "content_digest": adapter.content_digest,
            }
        )
    TrainingRuns(hub.catalog.engine).add_samples(record.run_id, entries)
    return entries


def _at_step(trainer: Trainer, record: RunRecord, base: Base) -> AdapterUse:
    """The adapter as it is now, uncatalogued: named by the content digest of the file it would be written as."""
    from lorahub.files.digests import digest_path
    from lorahub.provenance import AdapterUse
    from lorahub.training.writer import write_adapter

    with tempfile.TemporaryDirectory(prefix="lorahub-sample-") as scratch:
        path = Path(scratch) / "adapter.safetensors"
        states, scales = trainer.adapter_states(), trainer.module_scales()
        write_adapter(path, states, scales, base=base, dtype=trainer.precision.used, metadata={})
        digest = digest_path(path).content
    if digest is None:
        raise errors.TrainingError(f"cannot digest the adapter of run {record.run_id} at step {trainer.run.step}")
    return AdapterUse(name=record.name, content_digest=digest)


def version_samples(runs: TrainingRuns, training: dict[str, Any] | None, home: Path) -> list[dict[str, Any]]:
    """The samples of a trained version's run up to its step (``show``), paths made absolute; none for a version
    lorahub did not train, or whose run this catalog does not hold (a card copied from another home)."""
    if not training or "run_id" not in training:
        return []
    try:
        row = runs.get(str(training["run_id"]))
    except errors.TrainingError:
        return []
    done = int(training.get("steps", {}).get("done", 0))
    return [s | {"path": str(home / s["path"])} for s in row.samples if int(s["step"]) <= done]
