"""gradgeo tune and compare --storage (Optuna): real short studies on a tiny Fashion-MNIST, resuming after a kill,
worker processes sharing one grid on the embedded SQLite storage and on a real PostgreSQL server, bad input."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from gradgeo.cli import main
from gradgeo.training.config import TrainConfig
from gradgeo.training.engine import train
from gradgeo.training.run_folder import hold_folder

optuna = pytest.importorskip("optuna", reason="the tune extra is not installed: pip install 'gradgeo[tune]'")

from gradgeo.experiments import queue  # noqa: E402 (needs optuna)
from gradgeo.experiments.grid import run_dir  # noqa: E402
from gradgeo.experiments.storage import Job, Surplus, _queue_again, open_storage, open_study, work  # noqa: E402
from gradgeo.experiments.tune import search_space  # noqa: E402

# the newest Debian PostgreSQL server binaries (.ci/run installs them)
PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit()
             else 0, default=Path("/usr/lib/postgresql/15/bin"))
TINY = ["--width", "0.5", "--batch-size", "50", "--val-size", "100"]


def _gradgeo(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "gradgeo.cli", *map(str, args)]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}  # every worker trains the same numbers on one thread


# ---- the search space -------------------------------------------------------------------------------------------

def test_search_space_searches_what_the_spec_leaves_open():
    space = search_space("sgd:momentum=0.8+sobolev:boundary=periodic", 0.05)
    assert [(d.name, d.low, d.high, d.part) for d in space.dimensions] == [
        ("lr", pytest.approx(0.005), pytest.approx(0.5), "base"), ("lam", 3e-3, 0.3, "metric")]
    assert space.decades == pytest.approx(4.0)
    assert space.spec_with({"lr": 0.0123, "lam": 0.05}) == \
        "sgd:momentum=0.8,lr=0.0123+sobolev:boundary=periodic,lam=0.05"
    # a written option is fixed; laplacian's strength is sigma; weight decay only when asked
    fixed = search_space("adam:lr=1e-3+laplacian", 1.0, weight_decay_range=(1e-5, 1e-3))
    assert [d.name for d in fixed.dimensions] == ["sigma", "weight_decay"]
    assert fixed.spec_with({"sigma": 2.0, "weight_decay": 1e-4}) == "adam:lr=1e-3,weight_decay=0.0001+laplacian:sigma=2"
    assert [d.name for d in search_space("sgd", 0.1, lr_range=(0.01, 1)).dimensions] == ["lr"]
    assert search_space("sgd", 1.0).spec_with({"lr": 2.5e20}) == "sgd:lr=2.5e20"  # no '+' in a value


@pytest.mark.parametrize("spec, kwargs, message", [
    ("sgd:lr=0.1", {}, r"nothing to tune in 'sgd:lr=0.1': the spec fixes lr=0.1"),
    ("sgd:lr=0.1+h0:lam=2", {}, r"fixes lr=0.1, lam=2"),
    ("sgd+h0", {"strength_range": (3.0, 3.0)}, r"--strength-range must be .* 0 < LOW < HIGH .* empty"),
    ("sgd", {"lr_range": (0.1, 0.01)}, r"--lr-range must be"),
    ("sgd+foo", {}, r"unknown metric 'foo'"),
])
def test_search_space_errors_name_the_problem(spec, kwargs, message):
    with pytest.raises(ValueError, match=message):
        search_space(spec, 0.05, **kwargs)


# ---- the engine hook pruning relies on -------------------------------------------------------------------------

def test_on_epoch_sees_each_new_epoch_once_and_can_stop_a_resumable_run(tiny_fashion, tmp_path):
    config = TrainConfig(data_dir=str(tiny_fashion), epochs=2, batch_size=50, width=0.5, val_size=100)

    def stop(row):
        raise KeyboardInterrupt(f"stop after epoch {row['epoch']}")

    with pytest.raises(KeyboardInterrupt, match="stop after epoch 1"):
        train(config, tmp_path, log=None, on_epoch=stop)
    assert not (tmp_path / "result.json").exists()  # stopped, with the epoch checkpointed
    seen = []
    history = train(config, tmp_path, resume=True, log=None, on_epoch=seen.append)
    assert [r["epoch"] for r in seen] == [2] and seen[0] == history[1]  # the restored epoch is not reported again
    timeless = [{k: v for k, v in row.items() if k != "time"} for row in history]
    assert timeless == [{k: v for k, v in row.items() if k != "time"} for row in train(config, None, log=None)]


# ---- gradgeo tune ---------------------------------------------------------------------------------------------

def _main_beside(second: list[subprocess.Popen[str]], args: list[str], code: int) -> str:
    """Run ``gradgeo`` here, expecting exit ``code``, while a second worker (put into ``second`` meanwhile) runs;
    the second worker's output once it ends. It is killed if it still runs when this fails."""
    try:
        assert main(args) == code
        return second[0].communicate(timeout=240)[0]
    finally:
        if second and second[0].poll() is None:
            second[0].kill()
            second[0].wait()


def _stop_mid_run(command: list[str], runs: str, signal_: int) -> tuple[Path, subprocess.Popen[str]]:
    """Start ``command`` (a real worker process) and send it ``signal_`` in the middle of a run, once one of the
    folders ``runs`` (a glob) holds the checkpoint of an epoch and no result; returns that folder and the ended
    worker."""
    out = Path(command[command.index("--out") + 1])
    worker = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (mid := [d for d in out.glob(runs) if (d / "checkpoint.pt").exists()
                           and not (d / "result.json").exists()]):
            assert worker.poll() is None and time.monotonic() < deadline, worker.stdout.read() if worker.stdout else ""
            time.sleep(0.02)
        worker.send_signal(signal_)
        worker.wait(timeout=120)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    return mid[0], worker


@pytest.mark.slow
def test_tune_finds_a_better_than_worst_trial_and_resumes_after_a_kill(tiny_fashion, tmp_path, capsys):
    out = tmp_path / "tune"
    command = _gradgeo("tune", "sgd+h0", "--data-dir", tiny_fashion, *TINY, "--epochs", "2", "--trials", "5",
                       "--startup-trials", "2", "--heartbeat", "1", "--out", out)
    # killed in the middle of trial 0 or 1 (random start-up trials: never pruned), after an epoch
    folder, _ = _stop_mid_run(command, "sgd+h0/trial-*", signal.SIGKILL)
    mid = [folder]
    killed = int(mid[0].name.removeprefix("trial-"))
    first_epoch = (mid[0] / "metrics.jsonl").read_text().splitlines()[0]

    # the same command again, in this process (a fresh one would add only its start-up): it finds the killed
    # trial stale, retries it from its checkpoint and spends the rest of the budget
    assert main(command[3:]) == 0
    rerun = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    row = summary["rows"][0]
    trials = {t["number"]: t for t in row["trials"]}
    assert row["counted"] == 5 and row["complete"] + row["pruned"] == 5  # the budget, not one trial more
    assert trials[killed]["state"] == "fail" and not trials[killed]["counted"]
    retry = [t for t in trials.values() if t["retry_of"] == killed]
    assert len(retry) == 1 and retry[0]["state"] in ("complete", "pruned") and retry[0]["counted"]
    assert retry[0]["params"] == trials[killed]["params"] and retry[0]["dir"] == f"sgd+h0/trial-{killed}"
    # resumed from the killed trial's checkpoint: its first epoch was not trained again
    assert (mid[0] / "metrics.jsonl").read_text().splitlines()[0] == first_epoch
    values = [t["value"] for t in trials.values() if t["counted"] and t["value"] is not None]
    # every epoch reported for pruning (the retry inherits the killed trial's reports, which may lack the last
    # epoch before the kill)
    assert all(len(t["per_epoch"]) == t["epochs"] >= 1 for t in trials.values() if t["counted"] and t is not retry[0])
    assert 1 <= len(retry[0]["per_epoch"]) <= retry[0]["epochs"]
    assert row["best"]["value"] == max(t["value"] for t in trials.values() if t["state"] == "complete")
    assert row["best"]["value"] > min(values)  # the search found something better than its worst trial
    assert row["best"]["spec"] in rerun
    for name in ("history.png", "lr_strength.png", "summary.csv", "sgd+h0/trials.csv", "sgd+h0/trials.json"):
        assert (out / name).stat().st_size > 0
    # the best spec string is what its trial trained
    best_dir = out / trials[row["best"]["number"]]["dir"]
    assert json.loads((best_dir / "result.json").read_text())["config"]["optimizer"] == row["best"]["spec"]

    # the same command once more: the study is done, nothing trains, the same table
    assert main(command[3:]) == 0
    again = capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["rows"][0]["trials"] == row["trials"]
    assert "trial" in again and "waiting" not in again


@pytest.mark.slow
def test_a_trial_stopped_by_ctrl_c_is_resumed_like_a_killed_one(tiny_fashion, tmp_path):
    """A real SIGINT to a tuning worker in the middle of a trial: it ends with code 130, the trial is queued again
    with its parameters at once (not dropped, nor left for its heartbeat to go silent: half an hour here), and
    the next run of the command resumes it from its checkpoint."""
    out = tmp_path / "tune"
    command = _gradgeo("tune", "sgd+h0", "--data-dir", tiny_fashion, *TINY, "--epochs", "2", "--trials", "2",
                       "--startup-trials", "2", "--heartbeat", "600", "--out", out)
    folder, worker = _stop_mid_run(command, "sgd+h0/trial-*", signal.SIGINT)
    assert worker.returncode == 130, worker.stdout.read() if worker.stdout else ""
    stopped = int(folder.name.removeprefix("trial-"))
    first_epoch = (folder / "metrics.jsonl").read_text().splitlines()[0]
    study = optuna.load_study(study_name="tune:sgd+h0", storage=f"sqlite:///{out / 'study.db'}")
    trials = {t.number: t for t in study.get_trials()}
    queued = [t for t in trials.values() if t.system_attrs.get("failed_trial") == stopped]
    assert trials[stopped].state == optuna.trial.TrialState.FAIL
    assert len(queued) == 1 and queued[0].state == optuna.trial.TrialState.WAITING
    assert queued[0].params == trials[stopped].params

    rerun = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0 and "waiting for" not in rerun.stdout, rerun.stdout + rerun.stderr
    row = json.loads((out / "summary.json").read_text())["rows"][0]
    retry = [t for t in row["trials"] if t["retry_of"] == stopped]
    assert row["counted"] == 2 and len(retry) == 1 and retry[0]["state"] in ("complete", "pruned")
    assert retry[0]["dir"] == f"sgd+h0/trial-{stopped}"
    assert (folder / "metrics.jsonl").read_text().splitlines()[0] == first_epoch  # resumed, not trained again


@pytest.mark.slow
def test_the_retry_of_a_killed_trial_keeps_its_place_in_the_budget(tiny_fashion, tmp_path, monkeypatch):
    """Trials 0 and 1 were running when their workers were killed: they spend the budget of 2 and have gone silent.
    A rerun fails both as stale and, before it queues their retries, a second worker (a real process) looks: no
    trial queued, budget left, so it starts a fresh trial 2. The retries still take the killed trials' places, and
    the fresh trial is stopped at the end of an epoch as over the budget, instead of pushing a retry out of it
    (3 epochs: the rerun queues the retries during the fresh trial's first epoch, or, on a loaded machine, its
    second)."""
    out = tmp_path / "tune"
    command = _gradgeo("tune", "sgd", "--data-dir", tiny_fashion, *TINY, "--epochs", "3", "--trials", "2",
                       "--heartbeat", "1", "--out", out)
    assert main([*command[3:], "--timeout", "1e-9"]) == 0  # the study, with no trial yet
    storage = optuna.storages.RDBStorage(f"sqlite:///{out / 'study.db'}")
    study = optuna.load_study(study_name="tune:sgd", storage=storage)
    [[name, low, high]] = study.user_attrs["gradgeo"]["search_space"]
    for _ in range(2):  # running when their workers were killed: a heartbeat, then silence
        storage.record_heartbeat(study.ask({name: optuna.distributions.FloatDistribution(low, high, log=True)})
                                 ._trial_id)
    time.sleep(3.5)  # three heartbeats of 1 s missed: stale
    killed = {t.number: t.params for t in study.get_trials()}

    second: list[subprocess.Popen[str]] = []
    queue_retry = optuna.storages.RetryHeartbeatStaleTrialCallback.__call__

    def second_worker_first(callback, study_, trial):  # (called once per failed trial, after failing them all)
        if not second:
            second.append(subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                           text=True))
            deadline = time.monotonic() + 120
            while not any(t.number == 2 and "spec" in t.user_attrs for t in study_.get_trials(deepcopy=False)):
                assert second[0].poll() is None and time.monotonic() < deadline, second[0].communicate()[0]
                time.sleep(0.05)
        queue_retry(callback, study_, trial)

    monkeypatch.setattr(optuna.storages.RetryHeartbeatStaleTrialCallback, "__call__", second_worker_first)
    log = _main_beside(second, command[3:], 0)
    assert second[0].returncode == 0, log
    row = json.loads((out / "summary.json").read_text())["rows"][0]
    retries = {t["retry_of"]: t for t in row["trials"] if t["counted"]}
    assert (row["counted"], row["complete"], set(retries)) == (2, 2, {0, 1}), row["trials"]
    for number, retry in retries.items():  # the killed trial's values, in its folder
        assert study.get_trials()[retry["number"]].params == killed[number] and retry["dir"] == f"sgd/trial-{number}"
    fresh = study.get_trials()[2]
    assert fresh.state == optuna.trial.TrialState.FAIL and "failed_trial" not in fresh.system_attrs
    assert fresh.user_attrs["note"] == "over the budget", log
    assert re.search(r"\[sgd\] trial 2: stopped at epoch [12], over the budget", log), log


def _pause(worker: subprocess.Popen[str], database: Path) -> None:
    """Stop ``worker`` (SIGSTOP, as a suspended laptop or a paused VM does) at a moment it holds no lock on the
    SQLite ``database``: one stopped inside a write would block the other workers' writes until it continues."""
    while True:
        worker.send_signal(signal.SIGSTOP)
        while Path(f"/proc/{worker.pid}/stat").read_text().rpartition(")")[2].split()[0] != "T":
            time.sleep(0.001)
        connection = sqlite3.connect(database, timeout=0, isolation_level=None)
        try:
            connection.execute("BEGIN EXCLUSIVE")  # fails while any process reads or writes the database
            connection.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            worker.send_signal(signal.SIGCONT)
            time.sleep(0.01)
        finally:
            connection.close()


def _paused_while_another_takes_its_retry(command: list[str], runs: str) -> tuple[list[int], str, str, Path, str]:
    """Start worker B (a real process of ``command``, with ``--heartbeat 1``), pause it (:func:`_pause`) in the
    middle of a run, once one of the folders ``runs`` (a glob) holds an epoch's checkpoint and no result, for more
    than three heartbeats; then start worker A, and continue B once A waits for that run folder (B still holds it).
    Returns both exit codes (B's, A's), both logs, the folder and its first epoch's line of metrics."""
    out = Path(command[command.index("--out") + 1])
    env = {**_env(), "PYTHONUNBUFFERED": "1"}  # A's lines as it prints them
    workers: list[subprocess.Popen[str]] = []
    try:
        workers.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True))
        b = workers[0]
        deadline = time.monotonic() + 120
        while not (mid := [d for d in out.glob(runs) if (d / "checkpoint.pt").exists()]):
            assert b.poll() is None and time.monotonic() < deadline, b.communicate()[0]
            time.sleep(0.02)
        _pause(b, out / "study.db")
        assert not (mid[0] / "result.json").exists()  # paused mid-run (4 epochs of a fraction of a second)
        first_epoch = (mid[0] / "metrics.jsonl").read_text().splitlines()[0]
        # three heartbeats of 1 s missed, on the database's clock (whole seconds: a beat at 10.9 s reads 10 s), so
        # the run's trial is stale for the next worker that looks
        time.sleep(4.5)
        workers.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True))
        a = workers[1]
        assert a.stdout is not None
        seen = []
        for line in a.stdout:  # A fails the trial as stale, takes its retry and waits for B's folder
            seen.append(line)
            if ": waits for " in line:
                break
        else:
            pytest.fail("worker A ended without waiting for the paused worker's folder:\n" + "".join(seen))
        b.send_signal(signal.SIGCONT)
        log_b = b.communicate(timeout=240)[0]
        log_a = "".join(seen) + a.communicate(timeout=240)[0]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGCONT)
                worker.kill()
                worker.wait()
    return [b.returncode, a.returncode], log_b, log_a, mid[0], first_epoch


@pytest.mark.slow
def test_a_paused_worker_neither_crashes_a_worker_nor_loses_its_trial(tiny_fashion, tmp_path):
    """Worker B is paused (SIGSTOP: a suspended laptop, a paused VM) in the middle of trial 0 for more than three
    heartbeats. Worker A starts meanwhile, fails trial 0 as silent, queues its retry and takes it; the retry's run
    folder is still held by B, so A waits for it. B, continued, sees at the end of its epoch that trial 0 is no
    longer running, stops it (releasing the folder) and takes the next trial; A resumes the run from B's checkpoint.
    Neither worker fails, no epoch is trained twice, and the budget of 2 trials completes, no more."""
    out = tmp_path / "tune"
    command = _gradgeo("tune", "sgd", "--data-dir", tiny_fashion, *TINY, "--epochs", "4", "--trials", "2",
                       "--heartbeat", "1", "--out", out)
    codes, log_b, log_a, folder, first_epoch = _paused_while_another_takes_its_retry(command, "sgd/trial-*")
    assert codes == [0, 0], f"B:\n{log_b}\nA:\n{log_a}"
    assert folder.name == "trial-0" and "] trial 1: waits for sgd/trial-0, still held" in log_a, log_a
    assert re.search(r"\[sgd\] trial 0: stopped at epoch \d, no longer running", log_b), log_b
    row = json.loads((out / "summary.json").read_text())["rows"][0]
    trials = {t["number"]: t for t in row["trials"]}
    assert (row["counted"], row["complete"]) == (2, 2), row["trials"]  # the budget, all of it, not more
    assert trials[0]["state"] == "fail" and not trials[0]["counted"]
    [retry] = [t for t in trials.values() if t["retry_of"] == 0]
    assert retry["state"] == "complete" and retry["counted"] and retry["dir"] == "sgd/trial-0"
    # the retry resumed B's run: every epoch trained once, in order, the first ones by B
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    assert lines[0] == first_epoch and [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]
    assert f"trial {retry['number']}: epoch 1/4" not in log_a, log_a
    assert json.loads((folder / "result.json").read_text())["history"][-1]["val_acc"] == retry["value"]


@pytest.mark.slow
def test_tune_gives_every_spec_the_same_budget(tiny_fashion, tmp_path, capsys):
    assert main(["tune", "sgd", "sgd+h1", "--data-dir", str(tiny_fashion), *TINY, "--epochs", "1", "--trials", "2",
                 "--no-prune", "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [(r["spec"], r["counted"], r["complete"], r["decades"]) for r in summary["rows"]] == [
        ("sgd", 2, 2, 2.0), ("sgd+h1", 2, 2, 4.0)]
    assert "same budget of 2 trials" in table and "search spaces differ in size" in table


def test_tune_reports_every_epoch_of_a_trial_unless_quiet(tiny_fashion, tmp_path, capsys):
    args = ["tune", "sgd", "--data-dir", str(tiny_fashion), *TINY, "--epochs", "2", "--trials", "1", "--no-prune"]
    assert main([*args, "--out", str(tmp_path / "shown")]) == 0
    out = capsys.readouterr().out
    assert "[sgd] trial 0: epoch 1/2, val acc % " in out and "[sgd] trial 0: epoch 2/2, val acc % " in out, out
    assert main([*args, "--quiet", "--out", str(tmp_path / "quiet")]) == 0
    out = capsys.readouterr().out
    assert ": epoch " not in out and "[sgd] trial 0: val acc % " in out, out


@pytest.mark.slow
def test_no_trial_is_stopped_before_prune_after(tiny_fashion, tmp_path, capsys):
    """The median rule waits for --prune-after (default: half the epochs): the same study, allowed to stop trials
    from epoch 1, stops some there."""
    args = ["tune", "sgd", "--data-dir", str(tiny_fashion), *TINY, "--epochs", "4", "--trials", "5",
            "--startup-trials", "1", "--lr-range", "1e-5", "0.3"]

    def stopped(*extra: str) -> list[int]:
        assert main([*args, *extra]) == 0
        return [int(epoch) for epoch in re.findall(r"pruned at epoch (\d+)", capsys.readouterr().out)]

    assert 1 in stopped("--prune-after", "1", "--out", str(tmp_path / "from-1"))
    default = stopped("--out", str(tmp_path / "default"))
    assert default and min(default) >= 2
    assert main([*args, "--prune-after", "0", "--out", str(tmp_path / "bad")]) == 2
    assert "--prune-after must be a whole number of epochs from 1 to --epochs (4), got 0" in capsys.readouterr().err


def test_prune_after_is_refused_where_it_cannot_act(tiny_fashion, tmp_path, capsys):
    """--prune-after past the last epoch, or with --no-prune, would be silently ignored: both are refused."""
    args = ["tune", "sgd", "--data-dir", str(tiny_fashion), *TINY, "--epochs", "2", "--trials", "1"]
    assert main([*args, "--prune-after", "3", "--out", str(tmp_path / "late")]) == 2
    assert "from 1 to --epochs (2), got 3" in capsys.readouterr().err
    assert main([*args, "--no-prune", "--prune-after", "1", "--out", str(tmp_path / "off")]) == 2
    assert "--prune-after 1 has no effect with --no-prune: drop one of the two" in capsys.readouterr().err
    assert not (tmp_path / "late").exists() and not (tmp_path / "off").exists()


def test_a_diverging_trial_is_pruned_and_counts_as_spent(tiny_fashion, tmp_path, capsys):
    assert main(["tune", "sgd+h0", "sgd", "--data-dir", str(tiny_fashion), *TINY, "--epochs", "2", "--trials", "1",
                 "--lr-range", "1e30", "1e31", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "summary.json").read_text())["rows"]
    for row in rows:  # h0: the metric refuses the non-finite gradient; sgd: the loss turns NaN after an epoch
        assert (row["counted"], row["pruned"], row["best"]) == (1, 1, None)
        assert row["trials"][0]["note"].startswith("diverged")
    assert "(no complete trial yet)" in capsys.readouterr().out


# ---- compare --storage: one grid, several workers --------------------------------------------------------------

GRID = ["sgd", "sgd+h0:lam=2", "--seeds", "2", "--epochs", "1", *TINY]


@pytest.fixture(scope="module")
def single_worker(tiny_fashion, tmp_path_factory) -> dict:
    """The grid's summary from one ordinary ``gradgeo compare`` (no storage), in this process on one thread, as
    the workers train (``OMP_NUM_THREADS=1``)."""
    out = tmp_path_factory.mktemp("single")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["compare", *GRID, "--data-dir", str(tiny_fashion), "--quiet", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL 15 cluster on a unix socket in a temporary folder (as the ``postgres`` user when
    running as root: initdb refuses root), stopped and deleted at teardown."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN}: apt-get install postgresql-15")
    if os.geteuid() == 0 and not shutil.which("runuser"):
        pytest.skip("running as root without runuser: cannot start PostgreSQL as another user (initdb refuses root)")
    base = Path(tempfile.mkdtemp(prefix="gradgeo-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")  # the Debian server package creates this account
        os.chown(base, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = base / "data"
    try:
        subprocess.run([*as_user, str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
        subprocess.run([*as_user, str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w",
                        "-o", f"-k {base} -c listen_addresses= -F", "start"], check=True, capture_output=True,
                       timeout=120)
        yield f"postgresql+psycopg://postgres@/postgres?host={base}"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*as_user, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["embedded", "postgresql"])
def test_two_workers_finish_a_grid_once_with_the_summary_of_one(where, tiny_fashion, tmp_path, single_worker,
                                                                 request):
    storage = [] if where == "embedded" else [request.getfixturevalue("postgres_url")]
    out = tmp_path / "grid"
    command = _gradgeo("compare", *GRID, "--data-dir", tiny_fashion, "--quiet", "--out", out, "--storage",
                       *storage, "--heartbeat", "2")
    workers = [subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(2)]
    logs = [w.communicate(timeout=240)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs
    # every run trained by exactly one worker
    trained = sorted(line.split("] ", 1)[1].partition(": final")[0] for log in logs for line in log.splitlines()
                     if line.startswith("[") and "] " in line)
    assert trained == sorted(f"{spec} seed {seed}" for spec in ("sgd", "sgd+h0:lam=2") for seed in (0, 1)), logs
    url = storage[0] if storage else f"sqlite:///{out / 'study.db'}"
    study = optuna.load_study(study_name="grid", storage=url)
    complete = [(t.user_attrs["label"], t.user_attrs["seed"]) for t in study.get_trials()
                if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(complete) == sorted(set(complete)) and len(complete) == 4
    # each worker printed the summary, the same as one ordinary compare's
    summary = json.loads((out / "summary.json").read_text())
    assert [r["final_per_seed"] for r in summary["rows"]] == [r["final_per_seed"] for r in single_worker["rows"]]
    assert all("diff vs sgd" in log for log in logs)


@pytest.mark.slow
def test_a_rerun_after_every_worker_died_does_not_wait_for_them(tiny_fashion, tmp_path):
    """The only worker of a grid is killed (SIGKILL) in the middle of a run. Its heartbeat would keep the run
    'running' for half an hour (three beats of 600 s); the same command started again on the same machine sees
    that the process is gone, queues the run again at once and resumes it."""
    out = tmp_path / "grid"
    command = _gradgeo("compare", *GRID, "--data-dir", tiny_fashion, "--epochs", "2", "--quiet", "--out", out,
                       "--storage", "--heartbeat", "600")
    folder, _ = _stop_mid_run(command, "runs/*/seed-*", signal.SIGKILL)
    first_epoch = (folder / "metrics.jsonl").read_text().splitlines()[0]
    rerun = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0 and "waiting for" not in rerun.stdout, rerun.stdout + rerun.stderr
    study = optuna.load_study(study_name="grid", storage=f"sqlite:///{out / 'study.db'}")
    complete = sorted((t.user_attrs["label"], t.user_attrs["seed"]) for t in study.get_trials()
                      if t.state == optuna.trial.TrialState.COMPLETE)
    assert complete == sorted((spec, seed) for spec in ("sgd", "sgd+h0:lam=2") for seed in (0, 1))
    assert (folder / "metrics.jsonl").read_text().splitlines()[0] == first_epoch  # resumed, not trained again


@pytest.mark.slow
def test_a_paused_grid_worker_neither_crashes_a_worker_nor_trains_a_run_twice(tiny_fashion, tmp_path):
    """As for tune: the worker that takes the paused worker's run again waits for its folder and resumes it once
    the paused one, continued, has stopped it; every run of the grid completes once, no epoch trains twice."""
    out = tmp_path / "grid"
    command = _gradgeo("compare", "sgd", "sgd+h0:lam=2", "--seeds", "1", "--epochs", "4", *TINY, "--data-dir",
                       tiny_fashion, "--quiet", "--out", out, "--storage", "--heartbeat", "1")
    codes, log_b, log_a, folder, first_epoch = _paused_while_another_takes_its_retry(command, "runs/*/seed-*")
    assert codes == [0, 0], f"B:\n{log_b}\nA:\n{log_a}"
    assert re.search(r"seed 0: stopped, no longer running", log_b), log_b
    study = optuna.load_study(study_name="grid", storage=f"sqlite:///{out / 'study.db'}")
    complete = sorted((t.user_attrs["label"], t.user_attrs["seed"]) for t in study.get_trials()
                      if t.state == optuna.trial.TrialState.COMPLETE)
    assert complete == [("sgd", 0), ("sgd+h0:lam=2", 0)]
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    assert lines[0] == first_epoch and [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning",  # fail_stale_trials
                            "ignore:Heartbeat of storage is supposed to be used with Study.optimize")  # ask()
def test_a_copy_of_a_run_that_takes_over_from_a_paused_worker_waits_for_its_folder(tmp_path):
    """Two workers that start together both queue the grid's run (trials 0 and 1). Worker B takes trial 0 and is
    paused, holding the run folder; another worker fails the trial as stale and queues its retry (trial 2). Worker A
    then takes trial 1, the first queued: with trial 0 failed, that copy is the one that trains the run, so it
    waits for the folder like a retry (it used to end with "... is in use", exit code 2) until B, continued, lets go
    of it; the retry is then dropped as a duplicate. The run trains once."""
    storage = open_storage(None, tmp_path, heartbeat=1)
    study = open_study(storage, "grid", {"kind": "grid", "runs": [["sgd", 0]]}, direction="minimize")
    for _ in range(2):  # by each worker
        study.enqueue_trial({}, user_attrs={"label": "sgd", "seed": 0})
    paused = study.ask()  # B's
    storage.record_heartbeat(paused._trial_id)
    folder = run_dir(tmp_path, "sgd", 0)
    folder.mkdir(parents=True)
    with contextlib.ExitStack() as b:
        b.enter_context(hold_folder(folder))
        time.sleep(4)  # three heartbeats missed on the database's clock (whole seconds: a beat at 10.9 s reads 10)
        optuna.storages.fail_stale_trials(study)  # another worker looks
        lines: list[str] = []
        trained = []

        def log(line: str) -> None:
            lines.append(line)
            if ": waits for " in line:
                b.close()  # B continues: at the end of its epoch it stops the run, letting go of the folder

        def run_one(label: str, seed: int, still_running) -> str:
            with hold_folder(run_dir(tmp_path, label, seed)):
                trained.append((label, seed))
            return "trained"

        queue.run_queue([("sgd", 0)], run_one, storage=None, out=tmp_path, study="grid", settings={}, heartbeat=1,
                        log=log)
    assert trained == [("sgd", 0)]
    assert lines[0].startswith("sgd seed 0: waits for its run folder, still held by the worker of trial 0"), lines
    assert [(t.state.name, t.system_attrs.get("failed_trial")) for t in study.get_trials()] == [
        ("FAIL", None), ("COMPLETE", None), ("FAIL", 0)]


@pytest.mark.slow
def test_a_worker_that_looks_while_a_run_is_queued_again_waits_for_it(tiny_fashion, tmp_path, monkeypatch):
    """Worker A, in this process, is stopped by Ctrl-C in the grid's only run while worker B (a real process) waits
    for that run: A fails the run's trial, then queues it again. In between B looks: nothing queued, nothing
    running. B waits for the retry and trains it, instead of ending with "failed on other workers"."""
    out = tmp_path / "grid"
    command = _gradgeo("compare", "sgd", "--seeds", "1", "--epochs", "1", *TINY, "--data-dir", tiny_fashion,
                       "--quiet", "--out", out, "--storage", "--heartbeat", "1")
    second: list[subprocess.Popen[str]] = []
    run_queue = queue.run_queue

    def stopped_while_second_waits(runs, run_one, **kwargs):
        def run(label: str, seed: int, still_running) -> str:
            second.append(subprocess.Popen(command, env={**_env(), "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True))
            seen = []
            for line in second[0].stdout or ():  # until B waits for this run
                seen.append(line)
                if line.startswith("waiting for 1 trial(s)"):
                    raise KeyboardInterrupt
            raise AssertionError("".join(seen))

        run_queue(runs, run, **kwargs)

    queue_retry = optuna.storages.RetryHeartbeatStaleTrialCallback.__call__

    def second_looks_first(callback, study, trial):  # B looks every second
        with contextlib.suppress(subprocess.TimeoutExpired):
            second[0].wait(timeout=3)
        queue_retry(callback, study, trial)

    monkeypatch.setattr(queue, "run_queue", stopped_while_second_waits)
    monkeypatch.setattr(optuna.storages.RetryHeartbeatStaleTrialCallback, "__call__", second_looks_first)
    log = _main_beside(second, command[3:], 130)
    assert second[0].returncode == 0 and "[1/1] sgd seed 0: final" in log, log
    trials = optuna.load_study(study_name="grid", storage=f"sqlite:///{out / 'study.db'}").get_trials()
    assert [(t.number, t.state.name, t.system_attrs.get("failed_trial")) for t in trials] == [
        (0, "FAIL", None), (1, "COMPLETE", 0)]


@pytest.mark.parametrize("error, waits", [(KeyboardInterrupt, True), (ValueError, False)])
def test_a_lost_runs_retry_is_waited_for_three_heartbeats_a_failed_run_not_at_all(error, waits, tmp_path,
                                                                                 monkeypatch):
    """The first worker's run ends: lost (Ctrl-C), and that worker too before it queued the run again; or failed
    with an error, not queued again. The next worker queues the run afresh when it starts and trains it, then
    waits three heartbeats for the lost run's retry (not forever), and not at all for the failed run."""
    monkeypatch.setattr(optuna.storages.RetryHeartbeatStaleTrialCallback, "__call__", lambda *args: None)
    lines: list[str] = []
    kwargs = {"storage": None, "out": tmp_path, "study": "grid", "settings": {}, "heartbeat": 1, "log": lines.append}

    def first(label: str, seed: int, still_running) -> str:
        raise error

    with pytest.raises(error):
        queue.run_queue([("sgd", 0)], first, **kwargs)
    monkeypatch.undo()
    trained = []
    started = time.monotonic()
    queue.run_queue([("sgd", 0)], lambda label, seed, still_running: str(trained.append((label, seed))), **kwargs)
    assert trained == [("sgd", 0)] and any(line.startswith("waiting for 1 trial(s)") for line in lines) == waits
    assert not waits or 3 <= time.monotonic() - started < 30, lines


def test_two_workers_never_take_the_same_queued_trial(tmp_path):
    """Two processes take queued trials from the embedded storage as fast as they can. Optuna takes one by reading
    that it is waiting, then setting it running, with SELECT ... FOR UPDATE, which SQLite lacks: both could read
    "waiting" and run the same trial (a grid's run twice, one worker ending on "... is in use"; a duplicate's
    Surplus told twice: "Cannot tell a FAIL trial"). Each trial is taken once."""
    study = open_study(open_storage(None, tmp_path, heartbeat=1), "queue", {}, direction="minimize")
    for number in range(200):
        study.enqueue_trial({}, user_attrs={"n": number})
    take_all = ("import json, sys, warnings; from pathlib import Path; import optuna; "
                "from gradgeo.experiments.storage import open_storage; warnings.simplefilter('ignore'); "
                "study = optuna.load_study(study_name='queue', storage=open_storage(None, Path(sys.argv[1]), 1)); "
                "taken = iter(study._pop_waiting_trial_id, None); print(json.dumps(list(taken)))")
    workers = [subprocess.Popen([sys.executable, "-c", take_all, str(tmp_path)], env=_env(), stdout=subprocess.PIPE,
                                text=True) for _ in range(2)]
    first, second = (json.loads(w.communicate(timeout=240)[0]) for w in workers)
    assert sorted(first + second) == sorted(t._trial_id for t in study.get_trials())  # each taken, and once


def _silent_before_its_outcome_is_recorded(monkeypatch, out: Path, number: int) -> None:
    """Make this worker silent for three heartbeats (of 1 s) right before Optuna records the outcome of trial
    ``number``, its heartbeats already stopped (a worker paused there, or starved by a loaded machine); another
    worker on the study in ``out`` looks then (its own storage): it fails the trial as stale and queues it again."""
    tell = optuna.study._optimize._tell_with_warning

    def late(study, trial, *args, **kwargs):
        if trial.number == number:
            time.sleep(4)  # three heartbeats missed on the database's clock (whole seconds: a beat at 10.9 s reads 10)
            other = optuna.load_study(study_name=study.study_name, storage=open_storage(None, out, heartbeat=1))
            optuna.storages.fail_stale_trials(other)
            assert other.get_trials()[number].state == optuna.trial.TrialState.FAIL
        return tell(study, trial, *args, **kwargs)

    monkeypatch.setattr(optuna.study._optimize, "_tell_with_warning", late)


@pytest.mark.parametrize("outcome", ["value", "pruned", "surplus", "error"])
def test_a_trial_another_worker_failed_before_its_outcome_was_recorded_is_lost_cleanly(outcome, tmp_path,
                                                                                       monkeypatch):
    """Another worker fails this worker's trial as stale just before Optuna records its outcome, which Optuna then
    refuses ("Cannot tell a FAIL trial"). The worker goes on: a value or a pruning is dropped with a line (the retry
    the other worker queued takes the trial's place), a trial not needed (Surplus) quietly; an error of the
    objective's own still ends the worker, as that error (not Optuna's refusal)."""
    study = open_study(open_storage(None, tmp_path, heartbeat=1), "study", {}, direction="minimize")
    _silent_before_its_outcome_is_recorded(monkeypatch, tmp_path, 0)
    lines: list[str] = []

    def objective(trial):
        if trial.number == 0 and outcome != "value":
            raise {"pruned": optuna.TrialPruned(), "surplus": Surplus("not needed"), "error": OSError("disk")}[outcome]
        return 1.0

    def wants_trial(trials):  # one trial, and its retry
        return not trials or any(t.state == optuna.trial.TrialState.WAITING for t in trials)

    with pytest.raises(OSError, match="disk") if outcome == "error" else contextlib.nullcontext():
        work([Job(study, objective, wants_trial)], heartbeat=1, log=lines.append)
    trials = study.get_trials()
    assert trials[0].state == optuna.trial.TrialState.FAIL and trials[1].system_attrs["failed_trial"] == 0
    if outcome != "error":
        assert trials[1].state == optuna.trial.TrialState.COMPLETE  # the retry, in the trial's place
        assert lines == ([] if outcome == "surplus" else [
            "trial 0 of 'study': its outcome is dropped: another worker failed it while this one was silent for three "
            "heartbeats (paused?) and queued it again, which resumes the run from its checkpoint"])


@pytest.mark.slow
def test_a_trial_failed_as_stale_before_its_value_is_recorded_prints_its_final_line_once(tiny_fashion, tmp_path,
                                                                                         monkeypatch, capsys):
    """The worker of trial 0 is silent before Optuna records its value; another worker fails it and queues it
    again. The retry resumes the finished run and records the value: one final line, the retry's (trial 0's was
    printed before its value was refused, so the trial's final line used to come twice)."""
    _silent_before_its_outcome_is_recorded(monkeypatch, tmp_path, 0)
    assert main(["tune", "sgd", "--data-dir", str(tiny_fashion), *TINY, "--epochs", "1", "--trials", "1",
                 "--heartbeat", "1", "--quiet", "--out", str(tmp_path)]) == 0
    finals = [line for line in capsys.readouterr().out.splitlines() if ": val acc % " in line]
    assert len(finals) == 1 and finals[0].startswith("[sgd] trial 1: val acc % "), finals


def test_a_run_failed_as_stale_before_its_trial_is_recorded_logs_its_line_once(tmp_path, monkeypatch):
    """The same for a grid run of ``compare --storage``: one "[1/1]" line, the retry's."""
    _silent_before_its_outcome_is_recorded(monkeypatch, tmp_path, 0)
    lines: list[str] = []
    queue.run_queue([("sgd", 0)], lambda label, seed, still_running: "final", storage=None, out=tmp_path,
                    study="grid", settings={}, heartbeat=1, log=lines.append)
    assert [line for line in lines if line.startswith("[")] == ["[1/1] sgd seed 0: final"], lines


def test_ctrl_c_in_a_trial_another_worker_queued_again_stops_the_worker_and_queues_no_second_retry(tmp_path):
    """Another worker failed this worker's trial (silent for three heartbeats: paused) and queued it again; then
    Ctrl-C stops this worker in it. The worker stops (Optuna's refusal to record the failure used to hide the
    KeyboardInterrupt: the worker went on with the next trial), and the trial is not queued a second time: one
    retry, the other worker's."""
    study = open_study(open_storage(None, tmp_path, heartbeat=1), "study", {}, direction="minimize")

    def objective(trial):
        if trial.number == 0:
            other = optuna.load_study(study_name="study", storage=open_storage(None, tmp_path, heartbeat=1))
            _queue_again(other, trial._trial_id, fail=True)  # what that worker's fail_stale_trials does
            raise KeyboardInterrupt
        return 1.0

    def wants_trial(trials):  # one trial, and its retry
        return not trials or any(t.state == optuna.trial.TrialState.WAITING for t in trials)

    with pytest.raises(KeyboardInterrupt):
        work([Job(study, objective, wants_trial)], heartbeat=1, log=None)
    assert [(t.state.name, t.system_attrs.get("failed_trial")) for t in study.get_trials()] == [
        ("FAIL", None), ("WAITING", 0)]


def test_a_duplicate_run_another_worker_failed_before_its_surplus_was_recorded_ends_no_worker(tmp_path, monkeypatch):
    """Two workers that start together both queue the grid's run; the first copy trains it, the second is not
    needed (Surplus). The worker taking that copy is silent for three heartbeats before its failure is recorded;
    the other worker fails it as stale and queues it again. The worker goes on (it used to end with "Cannot tell a
    FAIL trial", exit code 2): the queued copy is dropped in turn, the run completes once."""
    study = open_study(open_storage(None, tmp_path, heartbeat=1), "grid", {"kind": "grid", "runs": [["sgd", 0]]},
                       direction="minimize")
    for _ in range(2):  # by each worker
        study.enqueue_trial({}, user_attrs={"label": "sgd", "seed": 0})
    _silent_before_its_outcome_is_recorded(monkeypatch, tmp_path, 1)
    trained = []
    queue.run_queue([("sgd", 0)], lambda label, seed, still_running: str(trained.append((label, seed))),
                    storage=None, out=tmp_path, study="grid", settings={}, heartbeat=1, log=None)
    trials = study.get_trials()
    assert trained == [("sgd", 0)]
    assert [(t.state.name, t.system_attrs.get("failed_trial")) for t in trials] == [
        ("COMPLETE", None), ("FAIL", None), ("FAIL", 1)]


# ---- bad input: a clear error, no traceback ---------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["sgd+foo"], "unknown metric 'foo'"),
    (["sgd:lr=0.1"], "nothing to tune in 'sgd:lr=0.1'"),
    (["sgd", "--lr-range", "0.1", "0.1"], "the search space would be empty"),
    (["sgd", "--val-size", "0"], "pass --val-size N"),
    (["sgd", "--trials", "0"], "--trials must be a whole number >= 1"),
    (["sgd", "--storage", "postgresql+psycopg://gradgeo:secret@127.0.0.1:1/nowhere"],
     "cannot open the study storage postgresql+psycopg://gradgeo:***@127.0.0.1:1/nowhere: "),
    (["sgd", "--storage", "nosuchdb://x"], "cannot open the study storage nosuchdb://x: "),
])
def test_tune_bad_input_is_named(args, message, tmp_path, capsys):
    defaults = [x for option, value in (("--val-size", "100"), ("--trials", "2")) if option not in args
                for x in (option, value)]
    assert main(["tune", *args, *defaults, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "secret" not in err


@pytest.mark.slow
def test_a_study_with_other_settings_is_refused_naming_the_difference(tiny_fashion, tmp_path, capsys):
    common = ["tune", "sgd", "--data-dir", str(tiny_fashion), *TINY, "--trials", "1", "--out", str(tmp_path)]
    assert main([*common, "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main([*common, "--epochs", "2", "--sampler-seed", "3"]) == 2
    err = capsys.readouterr().err
    assert f"study '{tmp_path.name}:sgd'" in err and "was created with other settings" in err
    assert "config.epochs: 1 in the study, 2 now" in err and "sampler.seed: 0 in the study, 3 now" in err
    assert "Traceback" not in err


def test_a_grid_study_with_other_settings_is_refused(tmp_path):
    storage = open_storage(None, tmp_path, heartbeat=5)
    open_study(storage, "grid", {"specs": ["sgd"], "config": {"epochs": 1}}, direction="minimize")
    with pytest.raises(ValueError, match=r"study 'grid' in sqlite:///.*study.db was created with other settings "
                                         r"\(config.epochs: 1 in the study, 2 now; specs: \['sgd'\] in the study, "
                                         r"\['sgd', 'adam'\] now\)"):
        open_study(storage, "grid", {"specs": ["sgd", "adam"], "config": {"epochs": 2}}, direction="minimize")


def test_without_the_extra_the_message_names_it(monkeypatch, capsys, tmp_path):
    for name in [m for m in sys.modules if m == "optuna" or m.startswith(("optuna.", "gradgeo.experiments"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ModuleNotFoundError
    assert main(["tune", "sgd", "--val-size", "100", "--trials", "1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'gradgeo[tune]'" in err and "Traceback" not in err
    assert main(["compare", "sgd", "--storage", "--seeds", "1", "--out", str(tmp_path)]) == 2
    assert "pip install 'gradgeo[tune]'" in capsys.readouterr().err


def test_importing_gradgeo_and_its_cli_does_not_import_optuna():
    code = ("import sys, gradgeo, gradgeo.cli, gradgeo.experiments, gradgeo.tasks; gradgeo.cli.build_parser(); "
            "print('optuna' in sys.modules, 'sqlalchemy' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.split() == ["False", "False"]


def test_a_best_value_on_the_edge_of_its_range_is_flagged_with_a_range_to_try():
    from gradgeo.experiments.search_space import edges

    space = [["lr", 0.01, 1.0], ["lam", 1.0, 100.0]]  # two decades each: the edge is the outer 0.2 decades
    assert edges({"lr": 0.1, "lam": 10.0}, space) == {}
    found = edges({"lr": 0.011, "lam": 70.0}, space)
    assert found["lr"] == {"edge": "low", "value": 0.011, "range": [0.01, 1.0], "suggested": [0.0011, 0.11]}
    assert found["lam"]["edge"] == "high" and found["lam"]["suggested"] == [7.0, 700.0]


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://user:S3cretPW@127.0.0.1:abc/db",  # a port that is not a number: does not parse
    "postgresql+psycopg://user:S3cret@PW@127.0.0.1/db",  # a raw @ in the password
    "postgresql+psycopg://user:S3cretPW@127.0.0.1:1/db",  # nothing listening
    "mysql://user:S3cretPW@127.0.0.1/db",  # a backend whose driver is not installed
    "oracle+nodriver://user:S3cretPW@127.0.0.1/db",  # an unknown dialect
    "postgresql+psycopg://user:S3cret%40PW@127.0.0.1:1/db",  # percent-encoded
])
def test_no_message_shows_the_password_of_a_bad_storage_url(url, tmp_path, capsys):
    code = main(["tune", "sgd", "--dataset", "fashion-mnist", "--val-size", "100", "--trials", "1", "--storage", url,
                 "--out", str(tmp_path / "t")])
    captured = capsys.readouterr()
    assert code != 0 and "cannot open the study storage" in captured.err or "percent-encoded" in captured.err
    for secret in ("S3cret", "PW@", "%40PW"):
        assert secret not in captured.out + captured.err, captured.err
    assert "Traceback" not in captured.err and "***" in captured.err
