#!/usr/bin/env bash
# The quickstart: what `make demo` runs. Each issue adds its step, so a new user sees the whole product work.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
shared="${LORAHUB_SHARED:-$here/../shared}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "lorahub --version"
lorahub --version

for file in "$shared"/fixtures/real/*.safetensors; do
  step "lorahub inspect $(basename "$file")   (a real file nobody on this team wrote)"
  lorahub inspect "$file"
done

step "lorahub dev example-lora: a kohya SD 1.5 LoRA with training metadata"
lorahub dev example-lora "$work/example.safetensors" --rank 8 --alpha 4
lorahub inspect "$work/example.safetensors"

step "lorahub inspect --json: the stable machine-readable report"
lorahub inspect --json "$work/example.safetensors" \
  | python -c 'import json,sys; r=json.load(sys.stdin); print({k: r[k] for k in ("format","layer_kinds","modules")}, r["base_model"]["family"], r["hashes"]["content"])'

step "a damaged file gets a clear error and exit code 4, never a traceback"
head -c 4000 "$work/example.safetensors" > "$work/truncated.safetensors"
set +e
lorahub inspect "$work/truncated.safetensors"
echo "exit code $?"
set -e
