"""``lorahub generate``: an image from a local pipeline and the prompt's adapters, signed with what made it.

The prompt names the adapters (``<lora:name:0.7>``); they are loaded through ``apply_prompt``, so the licence engine
is asked about the declared use before any tensor reaches the pipeline, and every adapter is verified. The image is
signed with C2PA Content Credentials naming the base model (by the digest of its folder) and each adapter (by content
digest, weight, licence and card signers), and a ``generate`` audit event records it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorahub import errors

if TYPE_CHECKING:
    from lorahub.provenance import SignedImage
    from lorahub.sdk.hub import Hub

FLUX_MAX_SEQUENCE = 256
"""FLUX pipelines default to 512 T5 tokens; prompts are short and a tiny T5 has few positions."""


@dataclass
class GenerateResult:
    """The signed image :meth:`Hub.generate` wrote, the prompt the pipeline saw, the adapters it used (ref,
    content digest, weight) and the licence verdict for the declared use."""

    image: SignedImage
    prompt: str
    """The prompt the pipeline saw: tags removed, trigger words appended."""
    adapters: list[dict[str, Any]] = field(default_factory=list)
    license_verdict: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.image.path),
            "sha256": self.image.sha256,
            "format": self.image.format,
            "prompt": self.prompt,
            "adapters": self.adapters,
            "license_verdict": self.license_verdict,
        }


def open_pipeline(base: str | os.PathLike[str]) -> Any:
    """A local diffusers pipeline folder, offline (nothing is fetched), on the GPU when there is one."""
    import torch
    from diffusers import DiffusionPipeline

    path = Path(base)
    if not (path / "model_index.json").is_file():
        raise errors.PathNotFoundError(
            f"{path} is not a diffusers pipeline folder (no model_index.json)",
            hint="Give a folder written by save_pretrained, e.g. `lorahub dev tiny-pipeline DIR`.",
        )
    cuda = torch.cuda.is_available()
    pipe = DiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call]
        path, local_files_only=True, torch_dtype=torch.float16 if cuda else torch.float32
    )
    return pipe.to("cuda") if cuda else pipe


def generate(
    hub: Hub,
    base: str | os.PathLike[str],
    prompt: str,
    *,
    out: str | os.PathLike[str],
    negative_prompt: str | None = None,
    seed: int = 0,
    steps: int = 20,
    size: tuple[int, int] | None = None,
    guidance: float | None = None,
    use: str | None = None,
    accept_uncertain: bool = False,
    base_license: str | None = None,
    key: str | None = None,
    pipe: Any = None,
) -> GenerateResult:
    """Generate, sign and record one image (``pipe`` reuses an open pipeline of ``base``)."""
    import torch

    from lorahub.files.bases import locate_base
    from lorahub.sdk.pipelines import pipeline_family
    from lorahub.sdk.prompts import apply_prompt

    location = locate_base(base) if pipe is None else None  # a pipeline given is used as it is
    pipe = pipe if pipe is not None else open_pipeline(location.path if location else base)
    applied = apply_prompt(pipe, prompt, hub=hub, use=use, accept_uncertain=accept_uncertain)
    verdict = (
        hub.license_check([h.adapter.ref for h in applied.handles], use=use).verdict
        if use and applied.handles
        else None
    )
    missing = [h.adapter.label for h in applied.handles if h.adapter.version is None]
    if missing:
        raise errors.NotCataloguedError(
            f"generate names catalogued adapters only; not catalogued: {', '.join(missing)}"
        )
    call: dict[str, Any] = {"num_inference_steps": steps, "output_type": "pil"}
    if size is not None:
        call["width"], call["height"] = size
    if guidance is not None:
        call["guidance_scale"] = guidance
    if negative_prompt and "Flux" not in type(pipe).__name__:
        call["negative_prompt"] = negative_prompt
    if "Flux" in type(pipe).__name__:
        call["max_sequence_length"] = min(FLUX_MAX_SEQUENCE, pipe.tokenizer_2.model_max_length)
    generator = torch.Generator(pipe.device).manual_seed(seed)
    image = pipe(applied.prompt, generator=generator, **call).images[0]
    uses = [hub.adapter_use(h.adapter.version.ref, h.weight) for h in applied.handles if h.adapter.version]
    base_ref = hub.base_ref(
        location.path if location else base,
        name=location.name if location else None,
        license=base_license,
        family=pipeline_family(pipe)[0],
    )
    parameters = {"guidance_scale": guidance, "width": image.width, "height": image.height, "use": use}
    signed = hub.sign_image(
        image,
        base=base_ref,
        adapters=uses,
        key=key,
        out=out,
        prompt=applied.prompt,
        negative_prompt=negative_prompt,
        seed=seed,
        steps=steps,
        scheduler=type(pipe.scheduler).__name__,
        parameters={k: v for k, v in parameters.items() if v is not None},
    )
    return GenerateResult(
        image=signed,
        prompt=applied.prompt,
        adapters=[
            {"ref": f"{u.name}@{u.version}", "content_digest": u.content_digest, "weight": u.weight} for u in uses
        ],
        license_verdict=verdict,
    )
