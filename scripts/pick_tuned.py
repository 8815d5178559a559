"""Pick the finals' specs from a tuning summary, by final validation accuracy only.

Prints, space-separated: the best plain cell of the base optimizer (the baseline), the best ``h0`` cell, and
the best cell of ``h1`` and ``sobolev`` together. Used by results/full-cifar-final/run.sh and
scripts/device-evidence.sh:

    python scripts/pick_tuned.py runs/full-cifar-tune/summary.json
"""

import json
import sys

from gradgeo.channel.factory import parse_spec


def main(path: str) -> None:
    with open(path) as f:
        rows = json.load(f)["rows"]

    def best(metrics: set[str]) -> str:
        cells = [r for r in rows if parse_spec(r["spec"]).metric in metrics]
        if not cells:
            sys.exit(f"{path}: no tuned cell for {sorted(metrics)}; tune those specs first")
        return max(cells, key=lambda r: r["final_val_acc"]["mean"])["spec"]

    print(best({"none"}), best({"h0"}), best({"h1", "sobolev"}))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/pick_tuned.py SUMMARY_JSON")
    main(sys.argv[1])
