"""scripts/pick_tuned.py: the finals' specs from tuning summaries, by validation accuracy only."""

import importlib.util
import json
import types
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

from gradgeo.experiments.search_space import edges

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("pick_tuned", ROOT / "scripts" / "pick_tuned.py")
assert _spec and _spec.loader
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)


def pick(*args: str) -> types.SimpleNamespace:
    """The script's main in process: its exit code, standard output and error message."""
    out, code, err = StringIO(), 0, ""
    try:
        with redirect_stdout(out):
            script.main(list(args))
    except SystemExit as stop:
        code, err = 1, str(stop.code)
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err)


def test_a_compare_grid_gives_the_specs_its_finals_ran():
    """The committed tuning grid of issue 11 picks exactly the specs its committed finals ran."""
    done = pick(str(ROOT / "results" / "full-cifar-tune" / "summary.json"))
    finals = json.loads((ROOT / "results" / "full-cifar-final" / "plan.json").read_text())["specs"]
    assert done.returncode == 0 and done.stdout.split() == finals, done.stderr


def study(spec: str, value: float, params: dict[str, float], space: list[list]) -> dict:
    """A row as gradgeo tune's summary writes it (the fields pick_tuned reads)."""
    name = "+".join([f"{spec.split('+')[0]}:lr={params['lr']:g}", *(
        f"{part}:{key}={params[key]:g}" for part in spec.split("+")[1:] for key in params if key != "lr")])
    return {"spec": spec, "best": {"number": 3, "value": value, "spec": name, "params": params},
            "edges": edges(params, space)}


def test_tune_studies_give_each_specs_best_and_refuse_an_edge(tmp_path):
    sgd = study("sgd", 84.7, {"lr": 1.45}, [["lr", 0.3, 6.0]])
    h0 = study("sgd+h0", 84.1, {"lr": 1.2, "lam": 5.0}, [["lr", 0.3, 6.0], ["lam", 1.0, 100.0]])
    muon = study("muon", 85.0, {"lr": 0.08}, [["lr", 0.01, 0.5]])
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"rows": [sgd, h0]}))
    second.write_text(json.dumps({"rows": [muon]}))
    done = pick(str(first), str(second))
    assert done.returncode == 0 and done.stdout.split() == ["sgd:lr=1.45", "sgd:lr=1.2+h0:lam=5", "muon:lr=0.08"]
    assert pick(str(first), "h0").stdout.split() == ["sgd:lr=1.2+h0:lam=5"]
    # lam 1.3 lies in the lowest tenth of log(1..100): refused, with the range to tune again
    first.write_text(json.dumps({"rows": [sgd, study("sgd+h0", 84.1, {"lr": 1.2, "lam": 1.3},
                                                      [["lr", 0.3, 6.0], ["lam", 1.0, 100.0]])]}))
    done = pick(str(first), str(second))
    assert done.returncode == 1 and done.stdout == ""
    assert "sgd+h0's best lam 1.3 is at the low edge of 1..100; tune it again on 0.13..13 first" in done.stderr
    # unless that edge is named a hard limit (the other edge, or another name, is still refused)
    done = pick(str(first), str(second), "--hard-limit", "lam=low")
    assert done.returncode == 0 and done.stdout.split() == ["sgd:lr=1.45", "sgd:lr=1.2+h0:lam=1.3", "muon:lr=0.08"]
    assert pick(str(first), "--hard-limit", "lam=high").returncode == 1
    assert pick(str(first), "--hard-limit", "lr=low").returncode == 1
    assert "NAME=low or NAME=high" in pick(str(first), "--hard-limit", "lam").stderr
    first.write_text(json.dumps({"rows": [{"spec": "sgd", "best": None, "edges": {}}]}))
    assert "sgd has no complete trial" in pick(str(first)).stderr
