"""bf16 + NHWC (this folder) against fp32 (results/fmnist-final), paired by seed.

Run: ``python results/fmnist-bf16/paired.py``.
"""

import json
from pathlib import Path

from gradgeo.experiments.stats import mean_ci, paired_test

here = Path(__file__).parent
fp32 = {r["spec"]: r for r in json.loads((here.parent / "fmnist-final" / "summary.json").read_text())["rows"]}
bf16 = json.loads((here / "summary.json").read_text())
assert json.loads((here.parent / "fmnist-final" / "plan.json").read_text())["seeds"] == bf16["seeds"]
for row in bf16["rows"]:
    ours, theirs = row["final_per_seed"], fp32[row["spec"]]["final_per_seed"]
    test = paired_test(ours, theirs)
    print(f"{row['spec']:<24} bf16 {mean_ci(ours).format()}  fp32 {mean_ci(theirs).format()}  "
          f"bf16 - fp32 {test.difference.format()}  p = {test.p_value:.3f}")
