"""The files of a run folder: their names, atomic writes, checkpoint loading, and the rule that an existing
run is never overwritten or mixed (the README's "What a run folder holds")."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = ["CHECKPOINT", "LOCK", "METRICS", "RESULT", "hold_folder", "read_checkpoint"]

CHECKPOINT, METRICS, RESULT = "checkpoint.pt", "metrics.jsonl", "result.json"
#: the empty file a folder's one writer holds an OS lock on (released when the process ends, however it ends)
LOCK = ".gradgeo.lock"


@contextlib.contextmanager
def hold_folder(folder: Path, what: str = "a run") -> Iterator[None]:
    """Hold ``folder``'s writer lock (an exclusive ``flock`` on ``folder/.gradgeo.lock``) while the block runs;
    a ValueError when another process holds it. The kernel drops the lock with the process, so a killed run
    leaves no stale lock. Where the OS has no ``flock`` (Windows), nothing is locked."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{folder} is in use: another gradgeo process is writing {what} there; wait for it to "
                             "end (or stop it), or pick another --out folder") from None
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


def _atomic_save(obj: Any, path: Path) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a file. The file
    gets the mode an ordinary write would (0666 less the umask, not mkstemp's 0600); JSON is strict (NaN is
    written as null). A full disk is an OSError (ENOSPC) whichever writer hit it (torch.save raises a
    RuntimeError of its own)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if path.suffix == ".json":
            Path(tmp).write_text(json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n")
        else:
            try:
                torch.save(obj, tmp)
            except RuntimeError as error:  # the zip writer's own error, also for a full disk
                free = shutil.disk_usage(path.parent).free
                reason = "no space left on the device" if free < (64 << 20) else f"torch.save failed ({error})"
                raise OSError(errno.ENOSPC if free < (64 << 20) else errno.EIO,
                              f"could not write {path}: {reason}") from None
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu",
                    keys: tuple[str, ...] = ("config", "model_args", "model", "history"),
                    fix: str = "delete it (--resume then starts the run over) or use another --out folder",
                    ) -> dict[str, Any]:
    """A checkpoint written by :func:`fit` (or another ``torch.save``'d dict holding ``keys``), loaded with
    ``weights_only=True`` (tensors and plain types only: a file cannot run code); a ValueError names a file
    that lacks ``keys``, is corrupt or is no checkpoint, and says what to do (``fix``)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; pass the {CHECKPOINT} file of a run (e.g. {path / CHECKPOINT})")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as error:  # what torch raises for a bad file
        text = str(error).strip()
        if "WeightsUnpickler error:" in text:  # not torch's advice to load with weights_only=False: that runs code
            detail = text.split("WeightsUnpickler error:", 1)[1].strip().split("\n\n")[0]
            reason = f"it holds more than tensors and plain values, refused since loading it could run code: {detail}"
        else:
            reason = text.splitlines()[0] if text else type(error).__name__
        raise ValueError(f"cannot read the checkpoint {path}: it is cut short, corrupt or not a gradgeo "
                         f"checkpoint ({reason}); {fix}") from None
    if not isinstance(state, dict) or not set(keys) <= state.keys():
        raise ValueError(f"{path} is not a gradgeo checkpoint (it lacks {', '.join(sorted(set(keys) - set(state)))} "
                         f"of the {CHECKPOINT} of a training run); {fix}"
                         if isinstance(state, dict) else f"{path} is not a gradgeo checkpoint; {fix}")
    return state


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
