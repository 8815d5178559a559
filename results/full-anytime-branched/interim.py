"""Interim per-exit table of full-anytime-branched from the committed runs (result.json), paired by seed against
`sum`, with the early-exit test accuracy at three FLOPs budgets: python results/full-anytime-branched/interim.py"""
import glob, json, os
from gradgeo.experiments.stats import mean_ci, paired_test
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs")
specs = {"sum": "sum", "osgd": "osgd", "osgd_granularity=tensor": "osgd:granularity=tensor"}
acc, budgets = {}, None
for d, label in specs.items():
    for f in glob.glob(f"{root}/{d}/seed-*/result.json"):
        seed = int(os.path.basename(os.path.dirname(f)).split("-")[1])
        r = json.load(open(f)); last = r["history"][-1]
        budgets = [b["budget"] for b in r["early_exit"]]
        acc.setdefault(label, {})[seed] = (last["test_exit_acc"], last["train_exit_acc"][3],
                                           [b["test_acc"] for b in r["early_exit"]], r["exit_flops"])
flops = next(iter(acc["sum"].values()))[3]
picks = [2, 4, 6]
print("| method | seeds | " + " | ".join(f"exit {e+1} ({flops[e]/1e6:.1f} MFLOPs)" for e in range(4))
      + " | " + " | ".join(f"early exit, {budgets[i]/1e6:.1f} MFLOPs" for i in picks) + " | train acc, exit 4 |")
print("|---" * (2 + 4 + len(picks) + 1) + "|")
for label, runs in acc.items():
    seeds = sorted(runs)
    common = [k for k in seeds if k in acc["sum"]]
    def cell(get):
        s = mean_ci([get(runs[k]) for k in seeds]).format()
        if label != "sum":
            t = paired_test([get(runs[k]) for k in common], [get(acc["sum"][k]) for k in common])
            s += f" ({t.difference.mean*100:+.2f}, p {t.p_value:.2f})"
        return s
    cells = [cell(lambda r, e=e: r[0][e]) for e in range(4)] + [cell(lambda r, i=i: r[2][i]) for i in picks]
    print(f"| `{label}` | {','.join(map(str, seeds))} | " + " | ".join(cells) + f" | {mean_ci([runs[k][1] for k in seeds]).format()} |")
