"""Pick the finals' specs from tuning summaries, by validation accuracy only.

Two kinds of summary:

* a ``gradgeo compare`` grid (``full-cifar-tune``): prints, space-separated, the best plain cell of the base
  optimizer (the baseline), the best ``h0`` cell, and the best cell of ``h1`` and ``sobolev`` together; or, given
  metric names, the best cell among those metrics (by final validation accuracy);
* one or more ``gradgeo tune`` studies (``air-tune-*``): prints each tuned spec's best trial as a spec string, in
  the order of the summaries and their rows (given metric names: only the specs with those metrics). A spec
  whose best value sits on an edge of its search range is refused, with the range to tune it on again: a
  final must not run an optimum that the search could not bracket. ``--hard-limit NAME=low`` (or ``=high``)
  accepts that edge of NAME as a hard limit, with a note on standard error: where the search cannot go on
  (``h1``'s lam towards 0, where ``h1`` becomes plain SGD, whose own optimum is tuned beside it).

Used by results/full-cifar-final/run.sh, results/full-cifar-laplacian/run.sh and results/air-final/run.sh:

    python scripts/pick_tuned.py runs/full-cifar-tune/summary.json
    python scripts/pick_tuned.py runs/full-cifar-laplacian-tune/summary.json laplacian
    python scripts/pick_tuned.py results/air-tune-sgd/summary.json results/air-tune-muon/summary.json
    python scripts/pick_tuned.py results/air-retune-h1/summary.json --hard-limit lam=low
"""

import json
import sys

from gradgeo.channel.factory import parse_spec
from gradgeo.channel.optim import METRICS


def grid_picks(path: str, rows: list[dict], metrics: list[str]) -> list[str]:
    def best(family: set[str]) -> str:
        cells = [r for r in rows if parse_spec(r["spec"]).metric in family]
        if not cells:
            sys.exit(f"{path}: no tuned cell for {sorted(family)}; tune those specs first")
        return max(cells, key=lambda r: r["final_val_acc"]["mean"])["spec"]

    families = [set(metrics)] if metrics else [{"none"}, {"h0"}, {"h1", "sobolev"}]
    return [best(family) for family in families]


def study_picks(path: str, rows: list[dict], metrics: list[str], limits: dict[str, str]) -> list[str]:
    picks = []
    for row in rows:
        if metrics and parse_spec(row["spec"]).metric not in metrics:
            continue
        if not row["best"]:
            sys.exit(f"{path}: {row['spec']} has no complete trial; let its tuning finish first")
        for name, edge in row.get("edges", {}).items():
            if limits.get(name) == edge["edge"]:
                print(f"{path}: {row['spec']}'s best {name} {edge['value']:.3g} is at the {edge['edge']} edge of "
                      f"{edge['range'][0]:g}..{edge['range'][1]:g}, taken as a hard limit (--hard-limit)",
                      file=sys.stderr)
                continue
            low, high = edge["suggested"]
            sys.exit(f"{path}: {row['spec']}'s best {name} {edge['value']:.3g} is at the {edge['edge']} edge of "
                     f"{edge['range'][0]:g}..{edge['range'][1]:g}; tune it again on {low:g}..{high:g} first")
        picks.append(row["best"]["spec"])
    return picks


def main(args: list[str]) -> None:
    limits: dict[str, str] = {}
    while "--hard-limit" in args:
        at = args.index("--hard-limit")
        name, _, edge = (args[at + 1] if at + 1 < len(args) else "").partition("=")
        if not name or edge not in ("low", "high"):
            sys.exit(f"--hard-limit takes NAME=low or NAME=high (lam=low), got {args[at + 1:at + 2] or 'nothing'}")
        limits[name] = edge
        args = args[:at] + args[at + 2:]
    paths = [a for a in args if a.endswith(".json")]
    metrics = [a for a in args if not a.endswith(".json")]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        sys.exit(f"unknown metric {unknown[0]!r}; expected one of {METRICS}")
    picks: list[str] = []
    for path in paths:
        with open(path) as f:
            rows = json.load(f)["rows"]
        studies = all("best" in r for r in rows)
        if not studies and len(paths) > 1:
            sys.exit(f"{path} is a compare grid's summary: give it alone (several summaries must be tune studies)")
        picks += study_picks(path, rows, metrics, limits) if studies else grid_picks(path, rows, metrics)
    print(*picks)


if __name__ == "__main__":
    if not any(a.endswith(".json") for a in sys.argv[1:]):
        sys.exit("usage: python scripts/pick_tuned.py SUMMARY_JSON [SUMMARY_JSON ...] [METRIC ...] "
                 "[--hard-limit NAME=low|high ...]")
    main(sys.argv[1:])
