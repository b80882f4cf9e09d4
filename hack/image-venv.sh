#!/bin/sh
# Build the runtime virtualenv of one workspace package, exactly as the images do:
#   hack/image-venv.sh PACKAGE VENV_DIR WHEEL_DIR
# The Dockerfiles run it in their build stage; tests/unit/test_images.py runs the same script
# on the host, then the entrypoint, because no image can be built on the development machines.
# Only the package's locked runtime dependencies are installed (hash-checked, no dev group,
# no other workspace member): the operator's venv holds no harness and no example code.
set -eu
pkg="$1"
venv="$2"
wheels="$3"
uv="${UV:-uv}"
python="${PYTHON:-python3}"
$uv build --quiet --wheel --package "$pkg" --out-dir "$wheels"
$uv export --quiet --frozen --no-dev --no-emit-workspace --package "$pkg" \
  --format requirements.txt --output-file "$wheels/requirements.txt"
$uv venv --quiet --python "$python" "$venv"
$uv pip install --quiet --python "$venv/bin/python" --require-hashes --no-deps -r "$wheels/requirements.txt"
$uv pip install --quiet --python "$venv/bin/python" --no-deps "$wheels"/"$(echo "$pkg" | tr - _)"-*.whl
