"""Per-exit table of a full-scale anytime stage from its committed runs (result.json), paired by seed against
`sum`, with the early-exit test accuracy at three FLOPs budgets:
python results/anytime_table.py results/full-anytime-branched (or results/full-anytime-nested)"""

import argparse
import json
from pathlib import Path

from gradgeo.experiments.stats import mean_ci, paired_test

SPECS = {"sum": "sum", "osgd": "osgd", "osgd_granularity=tensor": "osgd:granularity=tensor"}
PICKS = [2, 4, 6]  # early-exit budgets shown (indices into result.json's early_exit)


def load(root: Path) -> tuple[dict[str, dict[int, dict]], list[float], list[float]]:
    """{label: {seed: {"exits", "train", "early"}}}, the exit FLOPs and the early-exit budgets."""
    runs: dict[str, dict[int, dict]] = {}
    flops: list[float] = []
    budgets: list[float] = []
    for directory, label in SPECS.items():
        for path in sorted((root / directory).glob("seed-*/result.json")):
            result = json.loads(path.read_text())
            last = result["history"][-1]
            runs.setdefault(label, {})[int(path.parent.name.split("-")[1])] = {
                "exits": last["test_exit_acc"],
                "train": last["train_exit_acc"][-1],
                "early": [b["test_acc"] for b in result["early_exit"]],
            }
            flops, budgets = result["exit_flops"], [b["budget"] for b in result["early_exit"]]
    return runs, flops, budgets


def cell(runs: dict[int, dict], baseline: dict[int, dict] | None, key: str, index: int) -> str:
    text = mean_ci([runs[s][key][index] for s in sorted(runs)]).format()
    if baseline is not None:
        common = [s for s in sorted(runs) if s in baseline]
        test = paired_test([runs[s][key][index] for s in common], [baseline[s][key][index] for s in common])
        text += f" ({test.difference.mean * 100:+.2f}, p {test.p_value:.2f})"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("stage", type=Path, help="a stage directory with runs/<method>/seed-<n>/result.json")
    stage = parser.parse_args().stage
    if not (stage / "runs").is_dir():
        parser.error(f"{stage} has no runs/ directory; pass a stage such as results/full-anytime-branched")
    runs, flops, budgets = load(stage / "runs")
    header = [f"exit {e + 1} ({f / 1e6:.1f} MFLOPs)" for e, f in enumerate(flops)]
    header += [f"early exit, {budgets[i] / 1e6:.1f} MFLOPs" for i in PICKS]
    print("| method | seeds | " + " | ".join(header) + f" | train acc, exit {len(flops)} |")
    print("|---" * (len(header) + 3) + "|")
    for label, by_seed in runs.items():
        baseline = None if label == "sum" else runs["sum"]
        cells = [cell(by_seed, baseline, "exits", e) for e in range(len(flops))]
        cells += [cell(by_seed, baseline, "early", i) for i in PICKS]
        train = mean_ci([by_seed[s]["train"] for s in sorted(by_seed)]).format()
        print(f"| `{label}` | {','.join(map(str, sorted(by_seed)))} | " + " | ".join(cells) + f" | {train} |")


if __name__ == "__main__":
    main()
