"""Pair one spec's runs in two comparison folders by seed: the same spec and seeds under two settings that a
comparison cannot vary within one folder (the precision, the width, the machine).

    python scripts/pair_folders.py A_DIR B_DIR SPEC [SEED ...]

prints, for each measure (final test accuracy, best and final validation accuracy, final training accuracy),
the mean of each folder with its 95% CI, the paired difference B - A with its CI, the paired t-test p-value and
the minimum detectable effect (80% power at the measured paired spread), and the median epoch time of each.
Used by results/air-bf16-check/run.sh (bf16 against air-control's fp32 runs). Without SEEDS, the seeds finished
in both folders.
"""

import math
import statistics
import sys
from pathlib import Path

from gradgeo.experiments.grid import load_results, run_dir
from gradgeo.experiments.stats import mean_ci, minimum_detectable_effect, paired_test


def measures(result: dict) -> dict[str, float]:
    history = result["history"]
    return {"final test acc": history[-1]["test_acc"], "best val acc": max(row["val_acc"] for row in history),
            "final val acc": history[-1]["val_acc"], "final train acc": history[-1]["train_acc"],
            "epoch time (s)": statistics.median(row["time"] for row in history)}


def main(args: list[str]) -> None:
    if len(args) < 3:
        sys.exit("usage: python scripts/pair_folders.py A_DIR B_DIR SPEC [SEED ...]")
    a_dir, b_dir, spec = Path(args[0]), Path(args[1]), args[2]
    try:
        seeds = [int(s) for s in args[3:]]
    except ValueError as error:
        sys.exit(f"seeds are integers: {error}")
    if not seeds:
        finished = [{int(p.parent.name.removeprefix("seed-")) for p in run_dir(folder, spec, 0).parent.glob(
            "seed-*/result.json")} for folder in (a_dir, b_dir)]
        seeds = sorted(finished[0] & finished[1])
        if not seeds:
            sys.exit(f"no seed of {spec!r} has finished in both {a_dir} and {b_dir}")
    a = [measures(r) for r in load_results(a_dir, spec, seeds)]
    b = [measures(r) for r in load_results(b_dir, spec, seeds)]
    print(f"{spec}, seeds {seeds}: A = {a_dir}, B = {b_dir}")
    print(f"{'measure':<18}{'A':>18}{'B':>18}{'B - A':>16}{'p':>8}{'MDE':>7}")
    for name in a[0]:
        scale = 1.0 if name.startswith("epoch time") else 100.0
        x, y = [m[name] for m in a], [m[name] for m in b]
        test = paired_test(y, x)
        sd = statistics.stdev([v - u for u, v in zip(x, y)]) if len(x) > 1 else math.nan
        mde = minimum_detectable_effect(sd, len(x)) * scale
        print(f"{name:<18}{mean_ci(x).format(scale):>18}{mean_ci(y).format(scale):>18}"
              f"{test.difference.format(scale):>16}{test.p_value:>8.3f}{mde:>7.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
