#!/usr/bin/env bash
# Fashion-MNIST comes from the Debian package dataset-fashion-mnist (the original gzipped IDX files).
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
if [ -f "$dir/train-images-idx3-ubyte.gz" ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
else
  echo "Fashion-MNIST not found in $dir: install the Debian package dataset-fashion-mnist as root," >&2
  echo "or pass --data-dir DIR holding train-images-idx3-ubyte[.gz] and friends." >&2
  exit 1
fi
