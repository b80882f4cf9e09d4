#!/bin/sh
# Build the runtime virtualenv of one workspace package, exactly as the images do:
#   hack/image-venv.sh PACKAGE VENV_DIR WHEEL_DIR
# The Dockerfiles run it in their build stage; tests/integration/test_images.py runs the same
# script on the host, then the entrypoint, because no image can be built on the development
# machines. Installed: the package's locked runtime dependencies (hash-checked, no dev group)
# and wheels of the workspace members it depends on (the example server needs the operator's
# token verifier; the operator needs no other member): no harness, no tests.
set -eu
pkg="$1"
venv="$2"
wheels="$3"
uv="${UV:-uv}"
python="${PYTHON:-python3}"
mkdir -p "$wheels"
$uv export --quiet --frozen --no-dev --package "$pkg" \
  --format requirements.txt --output-file "$wheels/locked.txt"
# Workspace members come out as editable paths: build each into a wheel instead.
grep '^-e ' "$wheels/locked.txt" | sed 's/^-e //' >"$wheels/members.txt"
grep -v '^-e ' "$wheels/locked.txt" >"$wheels/requirements.txt"
while read -r member; do
  $uv build --quiet --wheel --out-dir "$wheels" "$member"
done <"$wheels/members.txt"
$uv venv --quiet --python "$python" "$venv"
$uv pip install --quiet --python "$venv/bin/python" --require-hashes --no-deps -r "$wheels/requirements.txt"
$uv pip install --quiet --python "$venv/bin/python" --no-deps "$wheels"/*.whl
