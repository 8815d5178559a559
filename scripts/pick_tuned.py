"""Pick the finals' specs from a tuning summary, by final validation accuracy only.

Prints, space-separated: the best plain cell of the base optimizer (the baseline), the best ``h0`` cell, and
the best cell of ``h1`` and ``sobolev`` together; or, given metric names, the best cell among those metrics.
Used by results/full-cifar-final/run.sh and results/full-cifar-laplacian/run.sh:

    python scripts/pick_tuned.py runs/full-cifar-tune/summary.json
    python scripts/pick_tuned.py runs/full-cifar-laplacian-tune/summary.json laplacian
"""

import json
import sys

from gradgeo.channel.factory import parse_spec
from gradgeo.channel.optim import METRICS


def main(path: str, metrics: list[str]) -> None:
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        sys.exit(f"unknown metric {unknown[0]!r}; expected one of {METRICS}")
    with open(path) as f:
        rows = json.load(f)["rows"]

    def best(family: set[str]) -> str:
        cells = [r for r in rows if parse_spec(r["spec"]).metric in family]
        if not cells:
            sys.exit(f"{path}: no tuned cell for {sorted(family)}; tune those specs first")
        return max(cells, key=lambda r: r["final_val_acc"]["mean"])["spec"]

    families = [set(metrics)] if metrics else [{"none"}, {"h0"}, {"h1", "sobolev"}]
    print(*(best(family) for family in families))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python scripts/pick_tuned.py SUMMARY_JSON [METRIC ...]")
    main(sys.argv[1], sys.argv[2:])
