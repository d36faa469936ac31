#!/usr/bin/env bash
# The quickstart: what `make demo` runs. Each issue adds its step, so a new user sees the whole product work.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
real="$here/tests/fixtures/real"  # real files from public repositories, with their licences (see its README)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "lorahub --version"
lorahub --version

for file in "$real"/*.safetensors; do
  step "lorahub inspect $(basename "$file")   (a real file nobody on this team wrote)"
  lorahub inspect "$file"
done

step "lorahub dev example-lora: a kohya SD 1.5 LoRA with training metadata"
lorahub dev example-lora "$work/example.safetensors" --rank 8 --alpha 4
lorahub inspect "$work/example.safetensors"

step "lorahub inspect --json: the stable machine-readable report"
lorahub inspect --json "$work/example.safetensors" \
  | python -c 'import json,sys; r=json.load(sys.stdin); print({k: r[k] for k in ("format","layer_kinds","modules")}, r["base_model"]["family"], r["hashes"]["content"])'

step "lorahub config show: the home in use (LORAHUB_HOME to choose another)"
lorahub config show

step "an identity that signs (created once; kept in the home, mode 0600)"
if [ "$(lorahub keys list --json)" = "[]" ]; then
  lorahub keys create "Quickstart User <quickstart@lorahub.example>"
fi
lorahub keys list

step "lorahub add: catalogue and sign the real files and the generated one"
lorahub add "$real/catundchat_sd15_lora__pytorch_lora_weights.safetensors" \
  --name catundchat-sd15 --license MIT --base-model runwayml/stable-diffusion-v1-5 --tag sd15
lorahub add "$real/cloneofsimo_lora__analog_svd_rank4.safetensors" \
  --name analog-svd --license Apache-2.0 --base-model runwayml/stable-diffusion-v1-5 --trigger "analog style"
cp "$work/example.safetensors" "$work/pixel-example.safetensors"
lorahub add "$work/pixel-example.safetensors" --license LicenseRef-CreativeML-OpenRAIL-M --embed

step "lorahub verify: by name, and a file carrying its own signed card"
lorahub verify analog-svd
lorahub verify "$work/pixel-example.safetensors"

step "lorahub convert: exact format conversion, proven by recomputing ΔW of every module"
lorahub convert "$real/catundchat_sd15_lora__pytorch_lora_weights.safetensors" "$work/catundchat-kohya.safetensors" --to kohya
lorahub convert "$work/catundchat-kohya.safetensors" "$work/catundchat-diffusers.safetensors" --to diffusers
lorahub inspect --json "$work/catundchat-kohya.safetensors" \
  | python -c 'import json,sys; r=json.load(sys.stdin); print(r["format"], r["base_model"]["family"], [c["status"] for c in r["claims"]])'

step "lorahub export --for: what A1111/Forge/ComfyUI and the Hugging Face Hub read (conversions are catalogued)"
lorahub export catundchat-sd15@1 "$work/webui" --for a1111 --weight 0.8
lorahub export catundchat-sd15@1 "$work/hf" --for hf
ls "$work/webui" "$work/hf"
lorahub lineage catundchat-sd15@2

step "lorahub convert --to comfyui / resize: other layouts, and a smaller rank with the energy kept reported"
lorahub convert "$work/example.safetensors" "$work/example-comfy.safetensors" --to comfyui
lorahub resize "$work/example.safetensors" "$work/example-r2.safetensors" --rank 2

step "lorahub license check: may these go together, and be used commercially? (guidance with citations)"
lorahub license check catundchat-sd15 --base-license creativeml-openrail-m
set +e
lorahub license check --license MIT --base-license flux-1-dev-non-commercial-license --use commercial
echo "FLUX.1 [dev] outputs for commercial use: exit code $? (10 = uncertain)"
set -e

step "dataset consent: scan training images (captions, sources, opt-out signals in the images), check, carry it"
lorahub dev example-dataset "$work/images"
lorahub dataset scan "$work/images" --sources "$work/images/sources.csv" --out "$work/manifest.json"
lorahub dataset check "$work/manifest.json" || true
lorahub dev example-lora "$work/trained.safetensors" --rank 4 --seed 7
lorahub add "$work/trained.safetensors" --name consent-demo --consent "$work/manifest.json" --license MIT
printf 'forbid_opted_out = true\n' > "$work/strict-policy.toml"
set +e
lorahub verify consent-demo --policy "$work/strict-policy.toml" > /dev/null
echo "verify with a policy that forbids opted-out data: exit code $?"
set -e

step "lorahub train: a tiny SD 1.5-shaped pipeline (random weights, made offline), trained for real; lineage in the card"
lorahub dev tiny-pipeline "$work/tiny-sd1" --family sd1
export OMP_NUM_THREADS=1  # tiny models: one thread is faster than two fighting
# Samples during training: kohya's prompt-file syntax (--s steps, --d seed, --n negative, --l guidance, --w/--h);
# rendered every 10 steps with the adapter as it is, signed with C2PA credentials naming the base and the version.
printf '%s\n' 'example style, a red square --s 4 --d 1' 'example style, a blue circle --s 4 --d 2 --n blurry' \
  > "$work/sample-prompts.txt"
lorahub train --base "$work/tiny-sd1" --data "$work/images" --sources "$work/images/sources.csv" \
  --trigger "example style" --name example-style --license MIT --steps 20 --save-every 10 --resolution 64 --lr 1e-3 \
  --sample-prompts "$work/sample-prompts.txt" --sample-every 10
lorahub train --base "$work/tiny-sd1" --data "$work/images" --sources "$work/images/sources.csv" \
  --trigger "inky" --name ink-style --license CC-BY-4.0 --steps 20 --resolution 64 --lr 1e-3 --seed 1
lorahub show example-style --json | python -c 'import json,sys; t=json.load(sys.stdin)["card"]["training"]; print(json.dumps({k: t[k] for k in ("base_model","dataset","steps","loss_curve")}, indent=1)[:1500])'
lorahub show example-style | grep "^sample"  # a line per sample of its run: step, prompt, path
sample="$(lorahub show example-style --json | python -c 'import json,sys; print(json.load(sys.stdin)["samples"][-1]["path"])')"
lorahub provenance inspect "$sample"  # its Content Credentials: signer, base digest, the adapter version it shows

step "from lorahub import load / stack: verified adapters applied to a diffusers pipeline, with weights"
python - "$work/tiny-sd1" <<'PY'
import sys

import lorahub  # before diffusers: lorahub quiets torchao's warnings (torchao is in this venv for --quantize)
import numpy as np
import torch
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained(sys.argv[1], local_files_only=True)
def image():
    out = pipe("a photo of a cat", num_inference_steps=2, height=64, width=64, output_type="np",
               generator=torch.Generator().manual_seed(0))
    return np.asarray(out.images[0])
base = image()
handles = lorahub.stack(pipe, ["example-style:0.7", "ink-style:0.4"])  # verified, licence-checked, then applied
print("stacked:", [(h.adapter.label, h.weight) for h in handles], "max pixel change", round(float(abs(image() - base).max()), 3))
applied = lorahub.apply_prompt(pipe, "a photo of a cat <lora:ink-style:0.5>")
print("prompt syntax:", repr(applied.prompt), [(h.adapter.label, h.weight) for h in applied.handles])
PY

step "lorahub merge + lineage: two adapters into one (exact), licence-checked, signed, with its parents"
lorahub merge example-style:0.7 ink-style:0.4 --out styles-merged
lorahub lineage styles-merged
lorahub lineage styles-merged --svg "$work/styles-merged-lineage.svg"   # the graph lorahub serve shows, as a file
lorahub show example-style --loss-plot "$work/example-style-loss.svg" > /dev/null

step "lorahub bake: adapters merged into a base checkpoint, streaming tensor by tensor"
lorahub bake "$work/tiny-sd1/unet/diffusion_pytorch_model.safetensors" styles-merged --component unet \
  --out "$work/baked-unet.safetensors"

step "lorahub generate: an image with Content Credentials naming the base and the adapters; read back"
lorahub generate --base "$work/tiny-sd1" --prompt "a lighthouse <lora:styles-merged:0.8>" --steps 2 --size 64x64 \
  --seed 1 --use commercial --out "$work/lighthouse.png"
lorahub provenance inspect "$work/lighthouse.png"
lorahub audit --adapter styles-merged

step "lorahub scan: a library folder catalogued where it lies (nothing copied, nothing written there)"
mkdir -p "$work/loras/styles" "$work/loras/characters"
lorahub dev example-lora "$work/loras/styles/watercolor.safetensors" --seed 11
lorahub dev example-lora "$work/loras/characters/heroine.safetensors" --seed 12
cp "$real/cloneofsimo_lora__analog_svd_rank4.safetensors" "$work/loras/styles/analog-film.safetensors"
printf 'a preview image' > "$work/loras/styles/watercolor.preview.png"
lorahub scan "$work/loras"
lorahub show watercolor

step "files move and vanish: a moved one is found by its digest, a missing one keeps its card"
mv "$work/loras/styles/watercolor.safetensors" "$work/loras/watercolor-v1.safetensors"
rm "$work/loras/characters/heroine.safetensors"
lorahub scan "$work/loras"
lorahub list --missing
lorahub show heroine
set +e
lorahub verify --all > /dev/null
echo "verify --all with a missing file: exit code $?"
set -e

step "lorahub push / pull: to an OCI registry and back, verified before anything is catalogued"
# LORAHUB_DEMO_REGISTRY names one that must be used (CI starts it); otherwise the step runs when one answers.
registry="${LORAHUB_DEMO_REGISTRY:-127.0.0.1:5917}"
if [ -n "${LORAHUB_DEMO_REGISTRY:-}" ] || python -c 'import sys, httpx; httpx.get(f"http://{sys.argv[1]}/v2/", timeout=2)' \
    "$registry" 2>/dev/null; then
  lorahub push analog-svd "oci://$registry/quickstart/analog-svd" --insecure
  lorahub keys export "Quickstart User" > "$work/quickstart.pem"
  # A verify-only home (a CI job, a colleague): no identity of its own, it trusts only the keys it is given.
  export_home="$LORAHUB_HOME"
  export LORAHUB_HOME="$work/pipeline-home"
  set +e
  lorahub pull "oci://$registry/quickstart/analog-svd" --insecure > /dev/null
  echo "pull before trusting the signer: exit code $? (nothing catalogued)"
  set -e
  lorahub trust add "$work/quickstart.pem" --name quickstart
  lorahub pull "oci://$registry/quickstart/analog-svd" --insecure
  lorahub list
  export LORAHUB_HOME="$export_home"
else
  echo "No OCI registry answers at $registry; to try push and pull, start a local one (Debian: apt install"
  echo "docker-registry) with: docker-registry serve examples/registry.yml   and run the quickstart again."
fi

step "lorahub list / search / show"
lorahub list
lorahub search analog
lorahub show catundchat-sd15

step "lorahub audit: who did what, and the chain checked"
lorahub audit
lorahub audit --verify

step "a tampered file fails verification (exit code 7)"
python - "$work/pixel-example.safetensors" "$work/tampered.safetensors" <<'PY'
import sys
data = bytearray(open(sys.argv[1], "rb").read())
data[-3] ^= 0x01
open(sys.argv[2], "wb").write(data)
PY
set +e
lorahub verify "$work/tampered.safetensors"
echo "exit code $?"
set -e

step "a damaged file gets a clear error and exit code 4, never a traceback"
head -c 4000 "$work/example.safetensors" > "$work/truncated.safetensors"
set +e
lorahub inspect "$work/truncated.safetensors"
echo "exit code $?"
set -e

step "next: this catalogue in a browser"
echo "Browse what the demo catalogued (previews, lineage graphs, loss curves, verify, licences, provenance, the audit"
echo "log), or ask its JSON API (/api/openapi.json), with:"
echo
echo "    ${LORAHUB_HOME:+LORAHUB_HOME=$LORAHUB_HOME }lorahub serve --open"
