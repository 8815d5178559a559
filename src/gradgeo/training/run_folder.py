"""The files of a run folder: their names, atomic writes, checkpoint loading, and the rule that an existing
run is never overwritten or mixed (the README's "What a run folder holds")."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = ["CHECKPOINT", "LOCK", "METRICS", "RESULT", "TEMP_NAME", "FolderInUse", "hold_folder", "read_checkpoint",
           "restore", "save_figure", "write_file"]

CHECKPOINT, METRICS, RESULT = "checkpoint.pt", "metrics.jsonl", "result.json"
#: the empty file a folder's one writer holds an OS lock on (released when the process ends, however it ends)
LOCK = ".gradgeo.lock"


#: the temporary file of an atomic write (``.NAME.XXXXXXXX.tmp`` beside ``NAME``); one left by a killed writer is
#: removed when the folder's lock is next taken
TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")


class FolderInUse(ValueError):
    """Raised by :func:`hold_folder` for a folder another process holds (a ValueError like every refused run
    folder: a caller that expects the holder to let go, such as a worker retrying a paused worker's trial, waits
    for it instead)."""


@contextlib.contextmanager
def hold_folder(folder: Path, what: str = "a run") -> Iterator[None]:
    """Hold ``folder``'s writer lock (an exclusive ``flock`` on ``folder/.gradgeo.lock``) while the block runs;
    a :class:`FolderInUse` error when another process holds it. The kernel drops the lock with the process, so a
    killed run leaves no stale lock; the temporary files a killed writer left (:data:`TEMP_NAME`, no other file)
    are removed once the lock is held. A folder this process may not write (read-only media) is locked through a
    read-only descriptor of its lock file, or not at all without one: nothing can be written there anyway.
    Where the OS has no ``flock`` (Windows), nothing is locked."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = None
    try:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        if error.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(folder / LOCK, os.O_RDONLY)
    if fd is None:  # a folder without a lock file that this process may not write
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUse(f"{folder} is in use: another gradgeo process is writing {what} there; wait for it to "
                             "end (or stop it), or pick another --out folder") from None
        for leftover in folder.iterdir():
            if TEMP_NAME.fullmatch(leftover.name) and leftover.is_file():
                with contextlib.suppress(OSError):  # a read-only folder keeps it: nothing is written there
                    leftover.unlink()
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float as None: JSON has no NaN (a one-seed summary's interval)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[str]:
    """A temporary file beside ``path`` (:data:`TEMP_NAME`) that replaces ``path`` when the block ends without
    an error, with the mode an ordinary write gives (0666 less the umask, not mkstemp's 0600): a crash never
    leaves half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, unless ``path`` holds exactly ``data`` already: a finished run or
    comparison read again writes nothing (and reads from read-only media)."""
    path = Path(path)
    with contextlib.suppress(OSError):
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    with _replacing(path) as tmp:
        Path(tmp).write_bytes(data)


def save_figure(figure: Any, path: str | os.PathLike[str], **savefig: Any) -> None:
    """A matplotlib figure as a PNG file, by :func:`write_file` (PNG output is the same bytes for the same
    figure, so an unchanged plot is not written again)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", **savefig)
    write_file(path, buffer.getvalue())


def _atomic_save(obj: Any, path: Path) -> None:
    """Write ``obj`` to ``path`` atomically: JSON (strict: NaN is written as null) by :func:`write_file`, so
    an unchanged file is not written again; anything else with ``torch.save``. A full disk is an OSError
    (ENOSPC) whichever writer hit it (torch.save raises a RuntimeError of its own)."""
    if path.suffix == ".json":
        write_file(path, (json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n").encode())
        return
    with _replacing(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as error:  # the zip writer's own error, also for a full disk
            free = shutil.disk_usage(path.parent).free
            reason = "no space left on the device" if free < (64 << 20) else f"torch.save failed ({error})"
            raise OSError(errno.ENOSPC if free < (64 << 20) else errno.EIO,
                          f"could not write {path}: {reason}") from None


#: the type of each field a gradgeo checkpoint may hold (mappings are dicts, sequences lists, as torch.save wrote)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "config": (dict,), "model_args": (dict,), "model": (dict,), "optimizer": (dict,), "scheduler": (dict,),
    "objective": (dict,), "history": (list,), "mean": (list,), "std": (list,), "test_acc": (int, float),
    "format": (int,), "source": (str,)}
# sentences of torch's refusal that advise loading the file anyway (weights_only=False, safe globals): not ours to give
_ADVICE = ("weights only load failed", "weights_only", "safe_globals", "allowlist", "documentation", "trusted",
           "two options", "pytorch 2.6")


def _refusal(text: str) -> str:
    """What torch's weights-only unpickler refused in ``text``, without its advice to load the file anyway."""
    sentences = re.split(r"(?<=[.!?])\s+|\n+", text.replace("WeightsUnpickler error:", "\n"))
    kept = [s.strip(" \t.") for s in sentences if s.strip(" \t.") and not any(a in s.lower() for a in _ADVICE)]
    return "; ".join(kept) or "an object that is not a tensor or a plain value"


def _field_problem(key: str, value: Any, state: dict[str, Any]) -> str | None:
    """What is wrong with field ``key`` of the checkpoint ``state`` (its type, the types inside it), or None."""
    expected = _FIELD_TYPES.get(key)
    if expected is None:
        return None
    if isinstance(value, bool) or not isinstance(value, expected):
        return f"is of type {type(value).__name__}, not {' or '.join(t.__name__ for t in expected)}"
    value = state[key]  # Any again: isinstance with a tuple of types narrowed it to object
    if key == "model" and not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()):
        return "is not a mapping of parameter names to tensors"
    if key == "model_args" and not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                       for v in value.values()):
        return f"holds {value!r}; expected whole numbers >= 1 (num_classes, in_channels)"
    if key == "history" and not all(isinstance(row, dict) and row.get("epoch") == i + 1 for i, row in enumerate(value)):
        return "is not one row per epoch (dicts whose epoch counts 1, 2, 3 ...)"
    epochs = state.get("config", {}).get("epochs") if isinstance(state.get("config"), dict) else None
    if key == "history" and isinstance(epochs, int) and len(value) > epochs:
        return f"holds {len(value)} epochs, more than the {epochs} of its config"
    return None


def read_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu",
                    keys: tuple[str, ...] = ("config", "model_args", "model", "history"),
                    fix: str = "delete it (--resume then starts the run over) or use another --out folder",
                    ) -> dict[str, Any]:
    """A checkpoint written by :func:`fit` (or another ``torch.save``'d dict holding ``keys``), loaded with
    ``weights_only=True`` (tensors and plain types only: a file cannot run code); a ValueError names a file
    that lacks ``keys``, is corrupt, is no checkpoint or holds a field of the wrong type (naming the field), and
    says what to do (``fix``)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; pass the {CHECKPOINT} file of a run (e.g. {path / CHECKPOINT})")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as error:  # what torch raises for a bad file
        text = str(error).strip()
        if "weights only load failed" in text.lower():  # not torch's advice to load it anyway: that runs code
            raise ValueError(f"cannot read the checkpoint {path}: it holds more than tensors and plain values "
                             f"({_refusal(text)}), refused since loading it could run code; {fix}") from None
        reason = text.splitlines()[0] if text else type(error).__name__
        raise ValueError(f"cannot read the checkpoint {path}: it is cut short, corrupt or not a gradgeo "
                         f"checkpoint ({reason}); {fix}") from None
    if not isinstance(state, dict) or not set(keys) <= state.keys():
        raise ValueError(f"{path} is not a gradgeo checkpoint (it lacks {', '.join(sorted(set(keys) - set(state)))} "
                         f"of the {CHECKPOINT} of a training run); {fix}"
                         if isinstance(state, dict) else f"{path} is not a gradgeo checkpoint; {fix}")
    for key in sorted(state):
        if (problem := _field_problem(key, state[key], state)) is not None:
            raise ValueError(f"{path} is not a gradgeo checkpoint: its field {key!r} {problem}; {fix}")
    return state


def restore(path: Path, state: dict[str, Any], targets: dict[str, Any], fix: str) -> None:
    """Load field ``name`` of the checkpoint ``state`` (read from ``path``) into ``targets[name]`` (a model,
    optimizer, scheduler or objective) by its ``load_state_dict``; a ValueError names the file and the field
    whose keys, shapes or values do not fit. An optimizer's state is checked too: every tensor in it is a
    scalar or has the shape of its parameter (momentum, Adam's moments), as the next step needs."""
    for name, target in targets.items():
        try:
            target.load_state_dict(state.get(name, {}))
            if isinstance(target, torch.optim.Optimizer):
                for p, buffers in target.state.items():
                    for key, value in buffers.items():
                        if isinstance(value, torch.Tensor) and value.dim() and value.shape != p.shape:
                            raise ValueError(f"{key} has shape {tuple(value.shape)}, its parameter "
                                             f"{tuple(p.shape)}")
            if isinstance(target, torch.optim.lr_scheduler.LRScheduler) and (
                    isinstance(target.last_epoch, bool) or not isinstance(target.last_epoch, int)):
                raise ValueError(f"last_epoch is {target.last_epoch!r}")
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
            reason = " ".join(str(error).split()) or type(error).__name__  # torch's lines, on one
            raise ValueError(f"{path}: its field {name!r} does not fit this run ({reason}); {fix}") from None


def _run_folder_problem(out: Path, resume: bool) -> str | None:
    """Why ``out`` cannot take this run, or None: an existing run is never overwritten or mixed silently."""
    if out.exists() and not out.is_dir():
        return f"the output folder {out} is a file; pick another --out"
    if not out.is_dir():
        return None
    found = [name for name in (CHECKPOINT, METRICS, RESULT) if (out / name).exists()]
    if found and not resume:
        return (f"{out} already holds a run ({', '.join(found)}); continue it with --resume (in Python: "
                "resume=True), or pick another --out folder (or delete this one) to start over")
    if resume and RESULT in found and CHECKPOINT not in found:
        return (f"{out} holds a finished run (result.json) whose {CHECKPOINT} was deleted: there is nothing to "
                "resume and its results stay in result.json; pick another --out folder to train again")
    return None
