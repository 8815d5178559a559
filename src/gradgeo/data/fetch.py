"""Downloading the built-in datasets: :func:`fetch_dataset` gets the original release files of a dataset from
where their authors publish them, checks each against its published SHA-256 checksum, and puts them where
:func:`~gradgeo.data.sources.load_dataset` looks, so that ``--dataset NAME`` finds them without ``--data-dir``.

Only the standard library is used (urllib, hashlib, tarfile). A file is written as ``NAME.part`` beside its
final name and renamed into place only once its checksum matches, so a file under its final name is always
whole; an interrupted download keeps its ``.part`` and the next run continues it with an HTTP range request.

The files and checksums are in :data:`RELEASES` (tests replace an entry to serve files of their own). Setting
``GRADGEO_DATA_MIRROR`` (:data:`MIRROR_VAR`) to a base URL downloads every file from there instead of its
canonical host, at the path it takes under the data root (``BASE/mnist/train-images-idx3-ubyte.gz``,
``BASE/cifar-10-python.tar.gz``): a data root that ``gradgeo data fetch`` filled, served over HTTP, is a mirror.
The checksums are checked all the same.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import importlib
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradgeo.data.formats import DatasetFormatError
from gradgeo.data.sources import _SPECS, ENV_VAR, dataset_source

__all__ = [
    "MIRROR_VAR",
    "RELEASES",
    "ChecksumMismatchError",
    "DownloadError",
    "Release",
    "RemoteFile",
    "default_root",
    "download",
    "fetch_dataset",
]

#: Environment variable naming a base URL to download every file from instead of its canonical host.
MIRROR_VAR = "GRADGEO_DATA_MIRROR"

_CHUNK = 1 << 20
_TIMEOUT = 60  # seconds without a byte before a download counts as failed


class DownloadError(OSError):
    """A file could not be downloaded: offline, refused, an HTTP error, or a download cut short."""


class ChecksumMismatchError(DownloadError):
    """A downloaded (or already present) file's SHA-256 is not the one published for it."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a release: its name, canonical URL, SHA-256 checksum and size in bytes."""

    name: str
    url: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Release:
    """A dataset's original release: its files, and whether they are one archive to unpack (the CIFAR tarballs,
    kept in the data root and unpacked into the dataset's folder) or the dataset's folder itself (the IDX files)."""

    files: tuple[RemoteFile, ...]
    archive: bool = False


def _idx_release(base_url: str, checksums: dict[str, tuple[str, int]]) -> Release:
    return Release(tuple(RemoteFile(name, base_url + name, sha256, size) for name, (sha256, size) in checksums.items()))


# Where each checksum comes from (two independent published sources each; nothing here was computed by us):
# - MNIST and Fashion-MNIST: tensorflow/datasets, tensorflow_datasets/url_checksums/{mnist,fashion_mnist}.txt
#   (SHA-256 and size), and the same SHA-256 values in pytorch/vision,
#   torchvision/prototype/datasets/_builtin/mnist.py.
# - CIFAR-10/100 python tarballs: keras-team/keras, keras/src/datasets/cifar{10,100}.py (file_hash), and
#   pytorch/vision, torchvision/prototype/datasets/_builtin/cifar.py; sizes as recorded beside these checksums by
#   projects that downloaded them (the Toronto page gives "163 MB" and "161 MB").
RELEASES: dict[str, Release] = {
    # the host the Fashion-MNIST README links to; plain http (the S3 website endpoint has no https): the
    # checksum is what vouches for the bytes
    "fashion-mnist": _idx_release("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", {
        "train-images-idx3-ubyte.gz": ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880),
        "train-labels-idx1-ubyte.gz": ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
        "t10k-images-idx3-ubyte.gz": ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102),
        "t10k-labels-idx1-ubyte.gz": ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148),
    }),
    # the original host, yann.lecun.com, has at times refused downloads; this S3 copy, kept by the PyTorch team,
    # is the mirror that torchvision.datasets.MNIST falls back to (its `mirrors` list)
    "mnist": _idx_release("https://ossci-datasets.s3.amazonaws.com/mnist/", {
        "train-images-idx3-ubyte.gz": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
        "train-labels-idx1-ubyte.gz": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
        "t10k-images-idx3-ubyte.gz": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
        "t10k-labels-idx1-ubyte.gz": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
    }),
    "cifar10": Release((RemoteFile(
        "cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce", 170498071),), archive=True),
    "cifar100": Release((RemoteFile(
        "cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7", 169001437),), archive=True),
}


def default_root() -> Path:
    """Where :func:`fetch_dataset` puts datasets by default: ``$GRADGEO_DATA`` when set, else ``./data``; the
    first two roots that :func:`~gradgeo.data.sources.load_dataset` searches."""
    return Path(os.environ[ENV_VAR]).expanduser() if os.environ.get(ENV_VAR) else Path("data")


def fetch_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    mirror: str | None = None,
    progress: bool | None = None,
    log: Callable[[str], object] | None = print,
) -> Path:
    """Download dataset ``name``'s original files into ``root``, check them, and return the dataset's folder.

    Fashion-MNIST and MNIST land as their four ``.gz`` IDX files in ``ROOT/fashion-mnist`` and ``ROOT/mnist``;
    CIFAR-10/100 as their python tarball in ``ROOT``, unpacked into ``ROOT/cifar-10-batches-py`` and
    ``ROOT/cifar-100-python`` (the tarball stays: it is what a later run checks; delete it to save the space).
    A file already present is checked and kept, a partial download (``NAME.part``) is continued; a file that is
    present but does not match its checksum, or a half-filled dataset folder, is an error (nothing is
    overwritten).

    Args:
        name: one of :data:`~gradgeo.data.sources.DATASETS`.
        root: the data root; default :func:`default_root` (``$GRADGEO_DATA``, else ``./data``).
        mirror: a base URL to download from instead of the canonical hosts; default ``$GRADGEO_DATA_MIRROR``.
        progress: a tqdm bar per download; default: when stderr is a terminal and tqdm is installed.
        log: called with a line per file and a last line saying where the dataset is; None for silence.

    Returns:
        The dataset's folder, e.g. ``data/mnist``.

    Raises:
        DownloadError: offline, a refused connection, an HTTP error or a cut-short download (run again: it
            resumes).
        ChecksumMismatchError: a downloaded file is not the published one (it is deleted), or a file already
            present is not (it is left alone).
        FileExistsError: the dataset's folder exists but lacks files (it is left alone).
        DatasetFormatError: an archive that cannot be unpacked safely.
        ValueError: unknown ``name``, or a mirror that is not an http(s) URL.
    """
    if name not in RELEASES:
        raise ValueError(f"unknown dataset {name!r}; gradgeo can fetch {', '.join(RELEASES)}")
    release, spec = RELEASES[name], _SPECS[name]
    root = Path(root).expanduser() if root is not None else default_root()
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_VAR) or None
    if mirror is not None and not mirror.startswith(("http://", "https://")):
        raise ValueError(f"the mirror {mirror!r} ({MIRROR_VAR}) must be an http:// or https:// URL")
    say = log or (lambda line: None)
    folder = root / spec.subdirs[0]
    if not release.archive:
        for file in release.files:
            _get(file, folder / file.name, _url(file, f"{folder.name}/{file.name}", mirror), progress, say)
    else:
        (file,) = release.files
        archive = root / file.name
        complete = folder.is_dir() and not spec.missing(folder)
        if folder.exists() and not complete:  # checked first: it would stop the unpacking after the download
            raise FileExistsError(f"{folder} exists but lacks {', '.join(spec.missing(folder))}; move it away or "
                                  "delete it, then run again")
        if complete and not archive.exists():
            say(f"{folder} already holds every file of {spec.display_name} (its archive {file.name} is gone, so "
                "there is no checksum to check them against; delete the folder to fetch it again)")
        else:
            _get(file, archive, _url(file, file.name, mirror), progress, say)
            if not complete:
                _unpack(archive, folder, spec.files)
                say(f"{folder}: unpacked from {archive}")
    say(_where(name, folder, root))
    return folder


def _url(file: RemoteFile, relative: str, mirror: str | None) -> str:
    return f"{mirror.rstrip('/')}/{relative}" if mirror else file.url


def _where(name: str, folder: Path, root: Path) -> str:
    """The last line of a fetch: where the dataset is and whether ``--dataset NAME`` finds it there unaided."""
    found = dataset_source(name).found
    if found is not None and found.resolve() == folder.resolve():
        return f"{name}: ready in {folder} (--dataset {name} finds it from this directory, no --data-dir needed)"
    if found is not None:
        return f"{name}: ready in {folder}; --dataset {name} alone would read {found} first: add --data-dir {root}"
    return f"{name}: ready in {folder}; use --dataset {name} --data-dir {root}"


def _get(file: RemoteFile, dest: Path, url: str, progress: bool | None, say: Callable[[str], object]) -> None:
    """Make ``dest`` hold ``file``: check it when present, else download it from ``url``."""
    if dest.exists():
        digest = _sha256(dest).hexdigest()
        if digest != file.sha256:
            raise ChecksumMismatchError(
                f"{dest} exists but its SHA-256 is {digest}, not the published {file.sha256}; it is left as it "
                "is: delete it (or move it away), then run again")
        say(f"{dest}: already present, SHA-256 verified")
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    resumed = download(url, dest, file.sha256, file.size, progress=progress)
    say(f"{dest}: downloaded from {url} ({_megabytes(file.size)}{', resumed' if resumed else ''}), SHA-256 verified")


def download(
    url: str, dest: str | os.PathLike[str], sha256: str, size: int, *, progress: bool | None = None
) -> bool:
    """Download ``url`` to ``dest`` (``size`` bytes, SHA-256 ``sha256``) through ``dest``'s ``.part`` file.

    A ``.part`` left by an earlier attempt is continued with a ``Range`` request (from the start when the server
    ignores it). The file appears under ``dest`` only once whole and matching; on a mismatch the download is
    deleted, on a network error it is kept for the next attempt.

    Returns:
        Whether an earlier partial download was continued.

    Raises:
        DownloadError: offline, refused, an HTTP error, or the connection closed early (``.part`` kept).
        ChecksumMismatchError: the whole file is not the one expected (``.part`` deleted).
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    if offset > size:  # not a prefix of this file: start over
        part.unlink()
        offset = 0
    digest = _sha256(part) if offset else hashlib.sha256()
    resumed = offset > 0
    if offset < size:
        response = _request(url, offset, part)
        with response:
            start, total = _extent(response)
            if total is not None and total != size:
                raise ChecksumMismatchError(f"{url} is not the published file: the server's is {total} bytes, the "
                                            f"published one {size}; nothing was downloaded ({MIRROR_VAR} names "
                                            "another source)")
            if start != offset:
                if start != 0:
                    raise DownloadError(f"cannot continue the download of {url}: asked for the bytes from {offset} "
                                        f"on, the server answered {response.headers.get('Content-Range')!r}; "
                                        f"delete {part} and run again")
                offset, digest, resumed = 0, hashlib.sha256(), False  # the server ignored the range: start over
            with part.open("ab" if offset else "wb") as out, _progress_bar(progress, size, offset, dest.name) as bar:
                for chunk in _chunks(response, url):
                    out.write(chunk)
                    digest.update(chunk)
                    bar(len(chunk))
                out.flush()
                os.fsync(out.fileno())
    got = part.stat().st_size
    if got < size:
        raise DownloadError(f"download of {url} stopped after {got} of {size} bytes (the connection closed); "
                            f"{part} keeps them: run the same command again to resume")
    if got > size or digest.hexdigest() != sha256:
        part.unlink()
        raise ChecksumMismatchError(
            f"{url} is not the published file: {got} bytes with SHA-256 {digest.hexdigest()}, expected {size} "
            f"bytes with SHA-256 {sha256}; the download was deleted. Run again; if it happens again, the server "
            f"holds another file ({MIRROR_VAR} names another source)")
    os.replace(part, dest)
    return resumed


def _request(url: str, offset: int, part: Path) -> Any:
    """The response to a GET of ``url`` (from byte ``offset`` on when not 0); a failure is a :class:`DownloadError`
    naming the URL."""
    headers = {"User-Agent": "gradgeo", **({"Range": f"bytes={offset}-"} if offset else {})}
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=_TIMEOUT)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # "range not satisfiable": the server's file is shorter than .part
            part.unlink()
            raise DownloadError(f"cannot continue the download of {url}: the server's file is shorter than {part}, "
                                "which was deleted; run again to download it from the start") from None
        raise DownloadError(f"cannot download {url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        raise DownloadError(f"cannot download {url}: {reason} (offline? {MIRROR_VAR} names another source)") \
            from None


def _extent(response: Any) -> tuple[int, int | None]:
    """Where the response's body starts in the file, and the file's whole size as the response declares it (None
    when it does not): a 206 says both in ``Content-Range: bytes START-END/SIZE``, a 200 is the whole file."""
    if response.status != 206:
        length = response.headers.get("Content-Length", "")
        return 0, int(length) if length.isdigit() else None
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", "").strip())
    if match is None:
        return -1, None
    return int(match[1]), None if match[2] == "*" else int(match[2])


def _chunks(response: Any, url: str) -> Iterator[bytes]:
    """The body in chunks; a network error is a :class:`DownloadError` (and a write error stays the caller's)."""
    while True:
        try:
            chunk = response.read(_CHUNK)
        except (OSError, http.client.HTTPException) as error:
            raise DownloadError(f"download of {url} interrupted ({error!r}); run the same command again to "
                                "resume") from None
        if not chunk:
            return
        yield chunk


@contextlib.contextmanager
def _progress_bar(
    progress: bool | None, total: int, initial: int, description: str
) -> Iterator[Callable[[int], object]]:
    """A tqdm byte counter for one download, yielding its ``update``; a no-op unless ``progress`` is True, or None
    with stderr a terminal and tqdm installed."""
    tqdm = None
    if progress or (progress is None and sys.stderr.isatty()):
        try:
            tqdm = importlib.import_module("tqdm").tqdm
        except ModuleNotFoundError:
            if progress:
                raise ModuleNotFoundError("a download progress bar needs tqdm: pip install 'gradgeo[harness]'",
                                          name="tqdm") from None
    if tqdm is None:
        yield lambda n: None
        return
    bar = tqdm(total=total, initial=initial, desc=description, unit="B", unit_scale=True, unit_divisor=1024,
               dynamic_ncols=True)
    try:
        yield bar.update
    finally:
        bar.close()


def _sha256(path: Path, digest: Any = None) -> Any:
    """``digest`` (a fresh SHA-256 by default) fed with the bytes of ``path``."""
    digest = digest or hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def _unpack(archive: Path, folder: Path, files: tuple[str, ...]) -> None:
    """Unpack ``archive`` (whose top folder is ``folder``'s name) into ``folder``, all or nothing.

    tarfile's ``data`` filter refuses members that would land outside the target (absolute paths, ``..``, links
    leading out) and device files; the members land in a hidden temporary folder beside ``folder`` that is
    renamed to it once they are all there.
    """
    scratch = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(scratch, filter="data")
        except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as error:  # not a full disk, say
            raise DatasetFormatError(f"{archive}: cannot unpack it safely ({error}); delete it and fetch again") \
                from None
        unpacked = scratch / folder.name
        missing = [f for f in files if not (unpacked / f).is_file()]
        if missing:
            raise DatasetFormatError(f"{archive}: has no {folder.name}/{', '.join(missing)}; delete it and fetch "
                                     "again")
        os.replace(unpacked, folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
