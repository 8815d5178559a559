#!/usr/bin/env bash
# Build the sdist and the wheel (the wheel from the sdist, as `python -m build` does), install the wheel into a
# fresh virtual environment with only the core requirement (torch), and check what a user of the bare package
# sees: gradgeo imports, a ChannelDirected step runs, `gradgeo --help` works and names the missing extras,
# `gradgeo list` prints its listing, and commands that need a missing extra say which one instead of printing a
# traceback.
# Needs `build` (in the test extra). Like scripts/setup.sh it installs ${TORCH_SPEC:-torch==2.13.0} first (the
# local CPU wheel where there is one). About a minute; the temporary folder is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "check-wheel: building the sdist and the wheel"
"$PY" -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
ls "$WORK/dist"
WHEEL=$(ls "$WORK"/dist/gradgeo-*.whl)
ls "$WORK"/dist/gradgeo-*.tar.gz >/dev/null

echo "check-wheel: installing it into a fresh venv with only torch"
"${PYTHON:-python3}" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install -q --disable-pip-version-check "${TORCH_SPEC:-torch==2.13.0}"
"$VPY" -m pip install -q --disable-pip-version-check "$WHEEL"
extra=$("$VPY" -m pip list --format=freeze --disable-pip-version-check 2>/dev/null \
  | grep -iE '^(tqdm|matplotlib|numpy|scipy|tensorboard|accelerate|transformers|lightning)==' || true)
if [ -n "$extra" ]; then echo "check-wheel: the core install pulled optional packages: $extra"; exit 1; fi

cd "$WORK"  # away from the checkout: everything below must come from the installed wheel
"$VPY" - <<'EOF'
import torch
from torch import nn

import gradgeo
import gradgeo.channel, gradgeo.cli, gradgeo.experiments, gradgeo.gan, gradgeo.multiexit, gradgeo.segment, gradgeo.tasks  # noqa: E401, F401, E501  every subpackage shipped

assert "/site-packages/" in gradgeo.__file__, gradgeo.__file__
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
opt = gradgeo.ChannelDirected(torch.optim.SGD(model.parameters(), lr=0.1), metric="sobolev", lam=0.1)
model(torch.randn(2, 3, 8, 8)).square().mean().backward()
grad = model[0].weight.grad.clone()
before = model[0].weight.detach().clone()
opt.step()
torch.testing.assert_close(before - model[0].weight.detach(), 0.1 * gradgeo.transforms.sobolev(grad, 0.1))
print(f"check-wheel: gradgeo {gradgeo.__version__} imports from {gradgeo.__file__}; a ChannelDirected step is right")
EOF

GRADGEO="$WORK/venv/bin/gradgeo"
"$VPY" - <<'EOF'
from importlib.metadata import distribution

dist = distribution("gradgeo")
assert dist.metadata["License-Expression"] == "MIT", dist.metadata["License-Expression"]
assert any(f.name == "LICENSE" for f in dist.files), [str(f) for f in dist.files if "dist-info" in str(f)]
print("check-wheel: the metadata names the license (License-Expression: MIT) and the wheel carries LICENSE")
EOF
[ "$("$GRADGEO" --version)" = "gradgeo $("$VPY" -c 'import gradgeo; print(gradgeo.__version__)')" ] \
  || { echo "check-wheel: gradgeo --version is not the package's version"; exit 1; }
"$GRADGEO" --help >help.txt
grep -q "pip install 'gradgeo\[harness\]'" help.txt || { cat help.txt; echo "check-wheel: --help names no missing extra"; exit 1; }
echo "check-wheel: gradgeo --help runs and names the missing extras:"
grep -A3 "optional extras" help.txt
"$GRADGEO" list >list.txt
"$GRADGEO" list metrics strategies --json >list.json
grep -q "sobolev" list.txt && grep -q "resnet20" list.txt && "$VPY" -c "import json; assert list(json.load(open('list.json'))) == ['metrics', 'strategies']" \
  || { cat list.txt list.json; echo "check-wheel: gradgeo list failed"; exit 1; }
echo "check-wheel: gradgeo list runs ($(wc -l <list.txt) lines)"

# expect_extra EXTRA ARGS...: the command fails with exit code 2 and a one-line message naming the extra
expect_extra() {
  local want=$1 rc=0
  shift
  "$GRADGEO" "$@" >out.txt 2>&1 || rc=$?
  if [ "$rc" -ne 2 ] || ! grep -q "pip install 'gradgeo\[$want\]'" out.txt || grep -q Traceback out.txt; then
    cat out.txt
    echo "check-wheel: 'gradgeo $*' exited $rc without naming gradgeo[$want]"
    exit 1
  fi
  echo "check-wheel: gradgeo $1 ... -> $(tail -n 1 out.txt)"
}
expect_extra harness compare sgd sgd+h0:lam=2 --seeds 1 --epochs 1 --out runs-compare
expect_extra harness demo --out runs-demo
expect_extra harness anytime compare sum osgd --seeds 1 --epochs 1 --out runs-anytime
expect_extra tensorboard train --epochs 1 --log tensorboard --out runs-train
echo "check-wheel: OK"
