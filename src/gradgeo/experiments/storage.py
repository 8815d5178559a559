"""Optuna studies that any number of worker processes share: the storage, the settings check and the loop that
takes trials until a study is done.

Storage: embedded by default, a SQLite file in the output folder (no server; the processes of one machine, or of
machines that share that folder on a file system with working locks); ``storage=URL`` takes any database URL of
Optuna's :class:`~optuna.storages.RDBStorage`, ``postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB`` being the
documented way to spread one study over many machines. On SQLite every transaction takes the database's write lock
as it begins (:func:`_begin_immediate`): Optuna's read-then-write of a trial is atomic there too, so a queued trial
is taken by one worker only.

Dead workers: a running trial records a heartbeat every ``heartbeat`` seconds. A trial silent for three is taken
for dead (its process was killed or lost its machine): the next worker that looks marks it failed and queues it
again with the same parameters (up to three times), and a gradgeo objective resumes it from its checkpoint. A
worker on the machine of a dead one need not wait for the silence: each trial records its worker's process (the
machine, the process id and its start time), and a trial whose process is gone is queued again at once. A trial
stopped by Ctrl-C (KeyboardInterrupt) is queued again the same way before the worker ends. Failing a trial and
queueing it again are two writes: a worker that looks in between waits for the retry (a trial whose objective
raised an error is not retried: it names itself in the user attribute ``raised``).

Paused workers: a worker that was only silent (stopped, a suspended laptop, a paused virtual machine) is alive
when it continues, still training the trial that another worker failed and queued again meanwhile. The retry's
run folder is then still held by it: the worker that took the retry waits for the folder (:func:`when_free`),
and the paused one, finding its trial no longer running (at the end of an epoch, :class:`Lost`, or when Optuna
refuses its result), stops it, lets go of the folder and takes the next trial; the retry resumes the run from
its checkpoint. No worker fails and no trial is lost.

This module imports Optuna: importing it without the extra raises a :class:`ModuleNotFoundError` that names
``pip install 'gradgeo[tune]'``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import socket
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from gradgeo.training.run_folder import FolderInUse

MISSING_EXTRA = "gradgeo tune and gradgeo compare --storage need Optuna: pip install 'gradgeo[tune]'"
try:
    import optuna
    import sqlalchemy
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import FrozenTrial, TrialState
except ModuleNotFoundError as error:
    raise ModuleNotFoundError(MISSING_EXTRA) from error

__all__ = ["EMBEDDED", "MACHINE_FIELDS", "MISSING_EXTRA", "Job", "Lost", "Surplus", "open_storage", "open_study",
           "portable_config", "quiet_optuna", "when_free", "work"]

_T = TypeVar("_T")

EMBEDDED = "study.db"
#: config fields that name things on one machine; workers on other machines may set them differently
MACHINE_FIELDS = ("data_dir", "device")
_SETTINGS_ATTR = "gradgeo"
_MAX_RETRY = 3
# errors of two workers creating the same new database at once: the loser retries and finds the tables
_CREATION_RACE = ("already exists", "duplicate key", "database is locked", "unique")


class Lost(Exception):  # noqa: N818 (not an error: the trial goes on elsewhere)
    """Raised by an objective whose trial is no longer running: another worker failed it while this one was
    silent for three heartbeats (paused) and queued it again. Its message is the line this worker logs; the
    worker writes nothing more to the trial and takes the next one."""


class Surplus(Exception):  # noqa: N818 (not an error: a trial that is not needed)
    """Raised by an objective for a trial that is not needed (over the budget, a duplicate, or asked for when
    the queue had just run empty): Optuna records it as failed at once, nothing trains."""


def quiet_optuna() -> contextlib.AbstractContextManager[None]:
    """Optuna's own log lines (study created, trial finished, surplus trials failed) and experimental-feature
    warnings off; gradgeo prints its own lines."""

    @contextlib.contextmanager
    def scope() -> Iterator[None]:
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                yield
        finally:
            optuna.logging.set_verbosity(verbosity)

    return scope()


def _password(url: str) -> str | None:
    """The password of a URL ``scheme://user:password@host/...``, found without parsing the URL (which may be
    malformed): the user info runs to the last ``@`` (a password may hold ``@`` and ``:``), the password from
    its first ``:``."""
    _, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return None
    user_info = rest.rpartition("@")[0]
    _, colon, password = user_info.partition(":")
    return password if colon and password else None


def redact(text: str, url: str) -> str:
    """``text`` with the password of ``url`` (and its URL-encoded form) replaced by ``***``."""
    password = _password(url)
    if not password:
        return text
    for form in {password, urllib.parse.quote(password, safe=""), urllib.parse.unquote(password)}:
        if form:
            text = text.replace(form, "***")
    return text


def shown_url(url: str) -> str:
    """The URL with its password hidden, for messages; masked as text before any parsing, so a URL that does not
    parse never shows it either."""
    return redact(url, url)


def open_storage(url: str | None, out: Path | None = None, heartbeat: int = 30) -> optuna.storages.RDBStorage:
    """The storage of ``url``, or the embedded SQLite file ``out/study.db`` when ``url`` is None.

    Raises:
        ValueError: naming the URL (password hidden) and the database's reason, when it cannot be opened.
    """
    if isinstance(heartbeat, bool) or not isinstance(heartbeat, int) or heartbeat < 1:
        raise ValueError(f"heartbeat must be a whole number of seconds >= 1, got {heartbeat!r}")
    if url is None:
        if out is None:
            raise ValueError("open_storage needs a database URL or an output folder for the embedded storage")
        out.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{(out / EMBEDDED).resolve()}"
    password = _password(url)
    if password is not None and "@" in password:  # a raw @ splits the URL elsewhere than meant
        raise ValueError(f"the password in the study storage URL {shown_url(url)} holds '@': write it percent-encoded "
                         "(%40), or leave it out of the URL and give it in PGPASSWORD or ~/.pgpass")
    sqlite = url.startswith("sqlite")
    # SQLite: wait for another worker's write instead of failing, and no BEGIN of pysqlite's own (see below); a
    # server: test pooled connections before use
    engine_kwargs: dict[str, Any] = ({"connect_args": {"timeout": 60, "isolation_level": None}} if sqlite
                                     else {"pool_pre_ping": True})
    for attempt in range(5):
        try:
            with quiet_optuna():
                storage = optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=_MAX_RETRY, inherit_intermediate_values=True))
            if sqlite:
                # Optuna reads a trial and then writes it in one transaction (a queued trial is taken: read as
                # waiting, set running), made atomic by SELECT ... FOR UPDATE, which SQLite lacks: two workers
                # could take the same queued trial. Each transaction takes the write lock as it begins instead.
                sqlalchemy.event.listen(storage.engine, "begin", _begin_immediate)
            return storage
        except ImportError as error:  # the URL's database driver (Optuna raises a plain ImportError for some)
            missing = f" {error.name!r}" if error.name else ""
            raise ValueError(f"cannot open the study storage {shown_url(url)}: its database driver{missing} is not "
                             "installed (PostgreSQL: pip install 'gradgeo[tune]' and write the URL as "
                             "postgresql+psycopg://...)") from None
        except (sqlalchemy.exc.SQLAlchemyError, ValueError) as error:
            reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
            if attempt < 4 and any(text in reason.lower() for text in _CREATION_RACE):
                time.sleep(0.5 + attempt)
                continue
            raise ValueError(f"cannot open the study storage {shown_url(url)}: {redact(reason, url)}") from None
    raise AssertionError("unreachable")


def _begin_immediate(connection: sqlalchemy.Connection) -> None:
    """Begin a transaction on an SQLite database with its write lock held (waiting for it, up to the timeout)."""
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def portable_config(config: Any) -> dict[str, Any]:
    """A config's fields without :data:`MACHINE_FIELDS`: what workers on different machines must agree on."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in MACHINE_FIELDS}


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


def open_study(storage: optuna.storages.BaseStorage, name: str, settings: dict[str, Any], *,
               direction: Literal["minimize", "maximize"],
               sampler: optuna.samplers.BaseSampler | None = None,
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Create the study ``name`` with ``settings`` recorded, or load it when it exists with the same settings.

    Raises:
        ValueError: the study exists with other settings; the message names every setting that differs.
    """
    settings = json.loads(json.dumps(settings))  # as stored: tuples become lists
    with quiet_optuna():
        study = optuna.create_study(storage=storage, study_name=name, direction=direction, sampler=sampler,
                                    pruner=pruner, load_if_exists=True)
    saved = study.user_attrs.get(_SETTINGS_ATTR)
    if saved is None:
        study.set_user_attr(_SETTINGS_ATTR, settings)
        return study
    there, here = _flat(saved), _flat(settings)
    differences = [f"{key}: {there.get(key, '(unset)')!r} in the study, {here.get(key, '(unset)')!r} now"
                   for key in sorted(there.keys() | here.keys()) if there.get(key) != here.get(key)]
    if differences:
        url = getattr(storage, "url", None)
        where = f" in {shown_url(url)}" if url else ""
        raise ValueError(f"study {name!r}{where} was created with other settings ({'; '.join(differences)}); "
                         "run it with its own settings, or pick another --study or --out")
    return study


#: the user attribute in which a running trial names its worker process (see :func:`_worker`)
WORKER_ATTR = "worker"
#: the user attribute in which a trial whose objective raised an error names itself (its number: a retry copies
#: the attributes of the trial it retries): Optuna fails it, and nothing queues it again
RAISED_ATTR = "raised"


def _machine() -> str | None:
    """This machine and process namespace, as another process of it sees them (host name, boot id, PID
    namespace), or None where there is no ``/proc`` to tell (then only heartbeats tell a dead worker)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{socket.gethostname()}/{boot}/{namespace}"


def _started(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks after boot, ``/proc/PID/stat``), or None where it is gone or
    a zombie (it was killed; its parent has not reaped it yet)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def _worker(trial_number: int) -> dict[str, Any] | None:
    """What a trial records of the process that runs it: the trial's number (a queued copy of the trial holds
    another), the machine, the process id and its start time (a reused id is another process)."""
    machine = _machine()
    return None if machine is None else {"trial": trial_number, "machine": machine, "pid": os.getpid(),
                                         "started": _started(os.getpid())}


def _queue_again(study: optuna.Study, trial_id: int, *, fail: bool) -> None:
    """Queue trial ``trial_id`` again with its parameters, as :func:`optuna.storages.fail_stale_trials` does for a
    silent one (the storage's retry callback: up to three times; the retry keeps the trial's reports and its
    gradgeo run folder); ``fail``: first fail it, a running trial whose worker is gone (unless another worker
    did so first, and queued it)."""
    storage = study._storage  # (as optuna's own fail_stale_trials: the storage and the trial's id)
    if fail:
        try:
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                return
        except optuna.exceptions.UpdateFinishedTrialError:
            return
    retry = getattr(storage, "get_heartbeat_stale_trial_callback", None)  # (the storage is wrapped in a cache)
    if retry is not None and (callback := retry()) is not None:
        callback(study, copy.deepcopy(storage.get_trial(trial_id)))


def _queue_dead(study: optuna.Study) -> None:
    """Queue again every running trial of ``study`` whose worker ran on this machine and is gone."""
    machine = _machine()
    if machine is None:
        return
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR)
        if (isinstance(worker, dict) and worker.get("trial") == trial.number and worker.get("machine") == machine
                and isinstance(worker.get("pid"), int) and _started(worker["pid"]) != worker.get("started")):
            _queue_again(study, trial._trial_id, fail=True)


@dataclasses.dataclass(frozen=True)
class Job:
    """One study a worker takes trials from.

    Attributes:
        study: the study.
        objective: runs one trial (raise :class:`Surplus` for a trial that is not needed).
        wants_trial: given the study's trials, whether to start one more now.
        done: called with each trial of this worker once Optuna has recorded its outcome (complete, pruned or
            failed), never for a trial whose outcome is dropped (another worker failed it meanwhile and queued it
            again): the place for a trial's final line, which its retry would print a second time.
    """

    study: optuna.Study
    objective: Callable[[optuna.Trial], float]
    wants_trial: Callable[[Sequence[FrozenTrial]], bool]
    done: Callable[[FrozenTrial], None] | None = None


def _look(study: optuna.Study) -> None:
    """Queue again the study's trials whose workers are dead: silent for three heartbeats, or gone from this
    machine."""
    optuna.storages.fail_stale_trials(study)
    _queue_dead(study)


def when_free(run: Callable[[], _T], waiting: str, *, poll: float,
              log: Callable[[str], None] | None) -> _T:
    """``run()``, a retried trial's training run, called again every ``poll`` seconds while its run folder is
    held by another process (:class:`~gradgeo.training.run_folder.FolderInUse`): the worker of the failed trial,
    paused and continued, still training it. That worker lets go at the end of its epoch (:class:`Lost`); the run
    then resumes from its checkpoint. ``waiting``: the line logged when it starts waiting."""
    logged = False
    while True:
        try:
            return run()
        except FolderInUse:
            if log is not None and not logged:
                log(waiting)
                logged = True
            time.sleep(poll)


def _take_one(job: Job, log: Callable[[str], None] | None) -> None:
    """Run one trial of ``job`` here, its worker recorded in it (:data:`WORKER_ATTR`) and, when its objective
    raises an error, the trial (:data:`RAISED_ATTR`); a trial that Ctrl-C stops is queued again, like a killed
    worker's, before the KeyboardInterrupt goes on.

    A trial that another worker failed meanwhile (this one was silent for three heartbeats: paused, or starved by
    a loaded machine) ends here, and the retry that worker queued takes its place: its objective raised
    :class:`Lost`, or Optuna refused to record its outcome, which may happen at any moment up to the last (a
    trial's heartbeats stop before its outcome is recorded). Its line goes to ``log``, none for a trial that was
    not needed (:class:`Surplus`); an error of the objective's own, or Ctrl-C, still ends the worker, as that error
    (the trial is not queued a second time)."""
    taken: list[int] = []
    raised: list[BaseException] = []  # what the objective raised

    def objective(trial: optuna.Trial) -> float:
        taken.append(trial._trial_id)
        if (worker := _worker(trial.number)) is not None:
            trial.set_user_attr(WORKER_ATTR, worker)
        try:
            return job.objective(trial)
        except BaseException as error:  # KeyboardInterrupt too: Optuna's refusal below must not hide it
            raised.append(error)
            if isinstance(error, Exception) and not isinstance(error, (optuna.TrialPruned, Lost)):
                trial.set_user_attr(RAISED_ATTR, trial.number)
            raise

    try:
        done = job.done
        job.study.optimize(objective, n_trials=1, catch=(Surplus,), gc_after_trial=False,
                           callbacks=None if done is None else [lambda _, trial: done(trial)])
    except KeyboardInterrupt:
        state = job.study._storage.get_trial(taken[0]).state if taken else None
        if state in (TrialState.RUNNING, TrialState.FAIL):  # Optuna failed it, or was stopped before it could
            _queue_again(job.study, taken[0], fail=state == TrialState.RUNNING)
        raise
    except Exception as error:
        # Optuna re-raises the objective's own error once it has recorded the trial as failed; any other error with
        # the trial failed is its refusal to record an outcome ("Cannot tell a FAIL trial"): another worker failed it
        trial = job.study._storage.get_trial(taken[0]) if taken else None
        own = raised[0] if raised else None
        if trial is None or trial.state != TrialState.FAIL or error is own:
            raise
        # outcomes, not errors (UpdateFinishedTrialError: the objective wrote to its trial after it was failed); a
        # KeyboardInterrupt is raised as it came, its trial already queued again by the worker that failed it
        if own is not None and not isinstance(own, (optuna.TrialPruned, Lost, Surplus, UpdateFinishedTrialError)):
            raise own from None
        if log is not None and not isinstance(own, Surplus):
            log(str(own) if isinstance(own, Lost) else f"trial {trial.number} of {job.study.study_name!r}: its outcome "
                "is dropped: another worker failed it while this one was silent for three heartbeats (paused?) and "
                "queued it again, which resumes the run from its checkpoint")


def _unfinished(study: optuna.Study, lost: dict[int, float], heartbeat: int) -> int:
    """How many trials of ``study`` are still to finish elsewhere: running, queued, or lost and failed with their
    retry not queued yet (the worker that failed one queues it next: :func:`_queue_again`, up to three times). A
    retry not queued three heartbeats after this worker first saw the failed trial will not be: the worker that
    failed it was lost too. ``lost``: when this worker first saw each lost trial (by id), updated here."""
    trials = study.get_trials(deepcopy=False)
    retried = {number for t in trials for number in t.system_attrs.get("retry_history", ())}
    now = time.monotonic()
    unfinished = 0
    for t in trials:
        if t.state in (TrialState.RUNNING, TrialState.WAITING):
            unfinished += 1
        elif (t.state == TrialState.FAIL and t.user_attrs.get(RAISED_ATTR) != t.number and t.number not in retried
              and len(t.system_attrs.get("retry_history", ())) < _MAX_RETRY):
            unfinished += now - lost.setdefault(t._trial_id, now) < 3 * heartbeat
    return unfinished


def work(jobs: Sequence[Job], *, heartbeat: int = 30, deadline: float | None = None,
         log: Callable[[str], None] | None = print) -> None:
    """Take trials from each job in turn until none wants one, then wait while trials run on other workers
    (their dead ones come back as queued trials and are taken here), until nothing runs anywhere, nor is about
    to be queued again.

    Args:
        jobs: the studies, in order.
        heartbeat: the storage's heartbeat in seconds: trials running elsewhere are looked at every
            ``min(5, heartbeat)`` seconds, and a lost trial's retry is waited for three heartbeats.
        deadline: a :func:`time.monotonic` time after which no trial starts and nothing is waited for.
        log: receives one line when this worker starts waiting for others, and one per trial of this worker that
            another worker failed meanwhile (:func:`_take_one`).
    """
    waiting_logged = False
    lost: dict[int, float] = {}
    with quiet_optuna():
        while True:
            for job in jobs:
                while deadline is None or time.monotonic() < deadline:
                    _look(job.study)
                    if not job.wants_trial(job.study.get_trials(deepcopy=False)):
                        break
                    _take_one(job, log)
            if deadline is not None and time.monotonic() >= deadline:
                return
            running = sum(_unfinished(job.study, lost, heartbeat) for job in jobs)
            if not running:
                return
            if log is not None and not waiting_logged:
                log(f"waiting for {running} trial(s) running on other workers")
                waiting_logged = True
            time.sleep(min(5, heartbeat))
            for job in jobs:
                _look(job.study)
