"""Tests of gradgeo.data.fetch and ``gradgeo data fetch`` against a local HTTP server on 127.0.0.1 that serves
tiny datasets written here (the internet is never reached): the layout the loaders read, resume with a range
request after a download really cut short, checksum mismatches, a refused connection, files already present,
unsafe archives, and the command's exit codes and messages."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from _dataset_files import write_cifar, write_mnist
from gradgeo.cli import main
from gradgeo.data import DATASETS, DatasetFormatError, load_dataset
from gradgeo.data.fetch import (
    MIRROR_VAR,
    RELEASES,
    ChecksumMismatchError,
    DownloadError,
    Release,
    RemoteFile,
    fetch_dataset,
)
from gradgeo.data.sources import _SPECS


class Mirror(ThreadingHTTPServer):
    """Serves the files under ``root`` at their relative paths; honours ``Range: bytes=N-`` unless told not to,
    records every request, and can cut a response short (``cut_after[path] = bytes sent before closing``)."""

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.honour_range = True
        self.cut_after: dict[str, int] = {}


class _Handler(BaseHTTPRequestHandler):
    server: Mirror

    def do_GET(self) -> None:
        wanted = self.headers.get("Range")
        self.server.requests.append((self.path, wanted))
        path = self.server.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = int(wanted.removeprefix("bytes=").rstrip("-")) if wanted and self.server.honour_range else 0
        if start >= len(data) and start:
            self.send_error(416)
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        cut = self.server.cut_after.pop(self.path, None)
        self.wfile.write(data[start:] if cut is None else data[start : start + cut])  # HTTP/1.0: then it closes

    def log_message(self, *args: object) -> None:  # quiet
        pass


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: a connection to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def never_the_internet(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that gives no mirror of its own is refused on 127.0.0.1 rather than reaching the canonical hosts."""
    monkeypatch.setenv(MIRROR_VAR, f"http://127.0.0.1:{closed_port()}")


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    server = Mirror(tmp_path / "mirror")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def publish(monkeypatch: pytest.MonkeyPatch, mirror: Mirror, name: str, files: dict[str, bytes]) -> None:
    """Put ``files`` (path under the data root -> bytes) on the mirror and make ``RELEASES[name]`` list them with
    their checksums (their canonical URLs lead nowhere: only the mirror can serve them)."""
    remote = []
    for relative, data in files.items():
        (mirror.root / relative).parent.mkdir(parents=True, exist_ok=True)
        (mirror.root / relative).write_bytes(data)
        file_name = Path(relative).name
        remote.append(RemoteFile(file_name, f"https://canonical.invalid/{file_name}",
                                 hashlib.sha256(data).hexdigest(), len(data)))
    monkeypatch.setitem(RELEASES, name, Release(tuple(remote), archive=RELEASES[name].archive))


def publish_mnist(monkeypatch: pytest.MonkeyPatch, mirror: Mirror, tmp_path: Path) -> dict:
    """A tiny MNIST on the mirror; returns the images and labels written."""
    made = write_mnist(tmp_path / "made" / "mnist", gz=True)
    publish(monkeypatch, mirror, "mnist", {f"mnist/{p.name}": p.read_bytes()
                                           for p in sorted((tmp_path / "made" / "mnist").iterdir())})
    return made


def cifar10_tarball(tmp_path: Path) -> tuple[bytes, torch.Tensor]:
    """A tiny cifar-10-python.tar.gz laid out as the real one (with its readme.html), and its training images."""
    folder = tmp_path / "made" / "cifar-10-batches-py"
    data, _ = write_cifar(folder, hundred=False, protocol=2)
    (folder / "readme.html").write_text("<html></html>")
    blob = io.BytesIO()
    with tarfile.open(fileobj=blob, mode="w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return blob.getvalue(), data


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------- success


def test_fetch_mnist_into_the_default_root_where_the_loader_finds_it(mirror, tmp_path, monkeypatch):
    made = publish_mnist(monkeypatch, mirror, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GRADGEO_DATA", raising=False)
    lines: list[str] = []
    folder = fetch_dataset("mnist", mirror=mirror.url, log=lines.append)
    assert folder == Path("data/mnist")
    assert files_under(tmp_path / "data") == sorted(f"mnist/{f.name}" for f in RELEASES["mnist"].files)
    assert {path for path, _ in mirror.requests} == {f"/mnist/{f.name}" for f in RELEASES["mnist"].files}
    splits = load_dataset("mnist")  # no data_dir: ./data is searched
    assert splits.source.resolve() == (tmp_path / "data" / "mnist").resolve()
    assert torch.equal(splits.train_x.squeeze(1), made["train"][0])
    assert torch.equal(splits.test_y, made["t10k"][1].long())
    assert sum("SHA-256 verified" in line for line in lines) == 4
    assert "no --data-dir needed" in lines[-1]


def test_fetch_cifar10_unpacks_the_tarball_where_the_loader_looks(mirror, tmp_path, monkeypatch):
    tarball, data = cifar10_tarball(tmp_path)
    publish(monkeypatch, mirror, "cifar10", {"cifar-10-python.tar.gz": tarball})
    root = tmp_path / "root"
    lines: list[str] = []
    assert fetch_dataset("cifar10", root, mirror=mirror.url, log=lines.append) == root / "cifar-10-batches-py"
    assert mirror.requests == [("/cifar-10-python.tar.gz", None)]
    # the archive stays (a later run checks it), the folder is whole, no scratch folder is left behind
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]
    assert (root / "cifar-10-batches-py" / "readme.html").is_file()
    splits = load_dataset("cifar10", data_dir=root)
    assert torch.equal(splits.train_x.reshape(len(data), -1), data)
    assert "--data-dir" in lines[-1]  # root is not a default location: say how to use it

    lines.clear()
    fetch_dataset("cifar10", root, mirror=mirror.url, log=lines.append)  # again: checked, nothing downloaded
    assert len(mirror.requests) == 1
    assert any("already present, SHA-256 verified" in line for line in lines)

    (root / "cifar-10-python.tar.gz").unlink()  # to save the space: the folder is then taken as it is
    lines.clear()
    fetch_dataset("cifar10", root, mirror=mirror.url, log=lines.append)
    assert len(mirror.requests) == 1 and "no checksum to check them against" in lines[0]


# -------------------------------------------------------------------------------------------- resume


def test_a_download_cut_short_is_resumed_with_a_range_request(mirror, tmp_path, monkeypatch):
    publish_mnist(monkeypatch, mirror, tmp_path)
    name = "train-images-idx3-ubyte.gz"
    whole = (mirror.root / "mnist" / name).read_bytes()
    mirror.cut_after[f"/mnist/{name}"] = 100  # the server closes the connection after 100 bytes
    root = tmp_path / "root"
    with pytest.raises(DownloadError, match=f"stopped after 100 of {len(whole)} bytes") as info:
        fetch_dataset("mnist", root, mirror=mirror.url, log=None)
    assert "run the same command again to resume" in str(info.value)
    # no half file under the final name: the bytes wait in NAME.part
    assert not (root / "mnist" / name).exists()
    assert (root / "mnist" / f"{name}.part").read_bytes() == whole[:100]

    lines: list[str] = []
    fetch_dataset("mnist", root, mirror=mirror.url, log=lines.append)
    assert [wanted for path, wanted in mirror.requests if path == f"/mnist/{name}"] == [None, "bytes=100-"]
    assert (root / "mnist" / name).read_bytes() == whole
    assert not list(root.rglob("*.part"))
    assert any(name in line and "resumed" in line for line in lines)


def test_a_server_that_ignores_the_range_is_downloaded_again_from_the_start(mirror, tmp_path, monkeypatch):
    publish_mnist(monkeypatch, mirror, tmp_path)
    mirror.honour_range = False
    name = "train-images-idx3-ubyte.gz"
    (tmp_path / "root" / "mnist").mkdir(parents=True)
    (tmp_path / "root" / "mnist" / f"{name}.part").write_bytes(b"x" * 50)  # not even a prefix of the file
    fetch_dataset("mnist", tmp_path / "root", mirror=mirror.url, log=None)
    assert (f"/mnist/{name}", "bytes=50-") in mirror.requests
    assert (tmp_path / "root" / "mnist" / name).read_bytes() == (mirror.root / "mnist" / name).read_bytes()


def test_a_partial_file_longer_than_the_servers_is_dropped(mirror, tmp_path, monkeypatch):
    made = {"mnist/train-images-idx3-ubyte.gz": b"0123456789"}
    publish(monkeypatch, mirror, "mnist", made)
    # the release says 20 bytes, the server has 10, and an earlier try left 15: the range cannot be served
    (file,) = RELEASES["mnist"].files
    monkeypatch.setitem(RELEASES, "mnist", Release((RemoteFile(file.name, file.url, file.sha256, 20),)))
    part = tmp_path / "root" / "mnist" / f"{file.name}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"y" * 15)
    with pytest.raises(DownloadError, match="the server's file is shorter than .*which was deleted"):
        fetch_dataset("mnist", tmp_path / "root", mirror=mirror.url, log=None)
    assert not part.exists()


# ---------------------------------------------------------------------------------- what can go wrong


def test_a_checksum_mismatch_deletes_the_download_and_says_so(mirror, tmp_path, monkeypatch):
    publish_mnist(monkeypatch, mirror, tmp_path)
    name = "t10k-images-idx3-ubyte.gz"
    served = mirror.root / "mnist" / name
    damaged = bytearray(served.read_bytes())
    damaged[-5] ^= 0xFF  # same size, other bytes: a corrupt mirror
    served.write_bytes(bytes(damaged))
    expected = next(f.sha256 for f in RELEASES["mnist"].files if f.name == name)
    root = tmp_path / "root"
    with pytest.raises(ChecksumMismatchError) as info:
        fetch_dataset("mnist", root, mirror=mirror.url, log=None)
    message = str(info.value)
    assert f"{mirror.url}/mnist/{name} is not the published file" in message and "\n" not in message
    assert expected in message and hashlib.sha256(damaged).hexdigest() in message
    assert not (root / "mnist" / name).exists() and not (root / "mnist" / f"{name}.part").exists()


def test_the_real_checksums_reject_other_files_through_the_mirror_variable(mirror, tmp_path, monkeypatch, capsys):
    # the published release, unpatched, against the tiny files on the mirror: refused before any byte is kept
    write_mnist(mirror.root / "mnist", gz=True)
    monkeypatch.setenv(MIRROR_VAR, mirror.url)
    assert main(["data", "fetch", "mnist", "--dir", str(tmp_path / "root"), "--quiet"]) == 2
    err = capsys.readouterr().err
    first = RELEASES["mnist"].files[0]
    assert err.startswith(f"gradgeo data: error: {mirror.url}/mnist/{first.name} is not the published file")
    assert f"the published one {first.size}" in err and err.count("\n") == 1
    assert files_under(tmp_path / "root") == []


def test_offline_is_one_line_naming_the_url(tmp_path, monkeypatch, capsys):
    offline = f"http://127.0.0.1:{closed_port()}"
    url = f"{offline}/mnist/{RELEASES['mnist'].files[0].name}"
    with pytest.raises(DownloadError, match=f"cannot download {url}: .*refused"):
        fetch_dataset("mnist", tmp_path / "root", mirror=offline, log=None)
    monkeypatch.setenv(MIRROR_VAR, offline)
    assert main(["data", "fetch", "mnist", "--dir", str(tmp_path / "root")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gradgeo data: error: cannot download {url}: ") and err.count("\n") == 1
    assert files_under(tmp_path / "root") == []


def test_files_present_are_checked_not_downloaded_and_never_overwritten(mirror, tmp_path, monkeypatch):
    publish_mnist(monkeypatch, mirror, tmp_path)
    root = tmp_path / "root"
    fetch_dataset("mnist", root, mirror=mirror.url, log=None)
    mirror.requests.clear()
    lines: list[str] = []
    fetch_dataset("mnist", root, mirror=mirror.url, log=lines.append)
    assert mirror.requests == []
    assert sum("already present, SHA-256 verified" in line for line in lines) == 4

    mine = root / "mnist" / "train-labels-idx1-ubyte.gz"
    mine.write_bytes(b"not the release")
    with pytest.raises(ChecksumMismatchError, match="exists but its SHA-256 is .*delete it"):
        fetch_dataset("mnist", root, mirror=mirror.url, log=None)
    assert mine.read_bytes() == b"not the release" and mirror.requests == []


def test_a_half_filled_dataset_folder_is_left_alone(mirror, tmp_path, monkeypatch):
    tarball, _ = cifar10_tarball(tmp_path)
    publish(monkeypatch, mirror, "cifar10", {"cifar-10-python.tar.gz": tarball})
    folder = tmp_path / "root" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "data_batch_1").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="lacks data_batch_2.*move it away or delete it"):
        fetch_dataset("cifar10", tmp_path / "root", mirror=mirror.url, log=None)
    assert mirror.requests == [] and files_under(folder) == ["data_batch_1"]


def _member(name: str, data: bytes = b"x", link: str | None = None) -> tuple[tarfile.TarInfo, io.BytesIO | None]:
    info = tarfile.TarInfo(name)
    if link is not None:
        info.type, info.linkname = tarfile.SYMTYPE, link
        return info, None
    info.size = len(data)
    return info, io.BytesIO(data)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink-out"])
def test_an_archive_that_would_write_outside_is_refused(mirror, tmp_path, monkeypatch, kind):
    outside = tmp_path / "escaped"
    root = tmp_path / "deep" / "root"  # unpacked in root/.cifar-10-batches-py.*.tmp: four levels below tmp_path
    member = {"dotdot": _member("cifar-10-batches-py/../../../../escaped"),
              "absolute": _member(str(outside)),
              "symlink-out": _member("cifar-10-batches-py/data_batch_1", link=str(outside))}[kind]
    blob = io.BytesIO()
    with tarfile.open(fileobj=blob, mode="w:gz") as tar:
        tar.addfile(*member)
    publish(monkeypatch, mirror, "cifar10", {"cifar-10-python.tar.gz": blob.getvalue()})
    # the data filter refuses ".." and links out, and makes an absolute name relative (it then lands in scratch)
    refusal = "has no cifar-10-batches-py/data_batch_1" if kind == "absolute" else "cannot unpack it safely"
    with pytest.raises(DatasetFormatError, match=refusal):
        fetch_dataset("cifar10", root, mirror=mirror.url, log=None)
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-python.tar.gz"]  # no folder, no scratch left
    assert not outside.exists() and not outside.is_symlink()


def test_an_archive_without_the_dataset_is_refused(mirror, tmp_path, monkeypatch):
    blob = io.BytesIO()
    with tarfile.open(fileobj=blob, mode="w:gz") as tar:
        tar.addfile(*_member("cifar-10-batches-py/readme.html"))
    publish(monkeypatch, mirror, "cifar10", {"cifar-10-python.tar.gz": blob.getvalue()})
    with pytest.raises(DatasetFormatError, match="has no cifar-10-batches-py/data_batch_1"):
        fetch_dataset("cifar10", tmp_path / "root", mirror=mirror.url, log=None)
    assert not (tmp_path / "root" / "cifar-10-batches-py").exists()


def test_bad_names_and_mirrors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'svhn'; gradgeo can fetch fashion-mnist, mnist"):
        fetch_dataset("svhn", tmp_path)
    with pytest.raises(ValueError, match=f"'ftp://x' \\({MIRROR_VAR}\\) must be an http"):
        fetch_dataset("mnist", tmp_path, mirror="ftp://x")


# ------------------------------------------------------------------------------------ the release list


def test_every_builtin_dataset_has_a_release_in_the_layout_the_loader_reads():
    assert tuple(RELEASES) == DATASETS
    for name, release in RELEASES.items():
        for file in release.files:
            assert len(file.sha256) == 64 and int(file.sha256, 16) >= 0 and file.size > 0
            assert file.url.endswith("/" + file.name) and file.url.startswith(("https://", "http://"))
        if release.archive:  # the python version of the CIFAR release, unpacked into the folder the loader reads
            assert len(release.files) == 1 and release.files[0].name.endswith("-python.tar.gz")
        else:  # the gzipped form of each IDX file the loader looks for
            assert [f.name for f in release.files] == [f + ".gz" for f in _SPECS[name].files]


# ----------------------------------------------------------------------------------- the command line


def test_the_command_fetches_prints_and_can_be_quiet(mirror, tmp_path, monkeypatch, capsys):
    publish_mnist(monkeypatch, mirror, tmp_path)
    monkeypatch.setenv(MIRROR_VAR, mirror.url)
    root = tmp_path / "root"
    assert main(["data", "fetch", "mnist", "--dir", str(root)]) == 0
    out = capsys.readouterr()
    assert out.out.count("SHA-256 verified") == 4 and f"mnist: ready in {root / 'mnist'}" in out.out
    assert out.err == ""  # no bar: stderr is not a terminal here
    assert main(["data", "fetch", "mnist", "--dir", str(root), "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")


def test_the_command_rejects_an_unknown_dataset_and_explains_itself(capsys):
    with pytest.raises(SystemExit) as info:
        main(["data", "fetch", "svhn"])
    assert info.value.code == 2 and "invalid choice: 'svhn'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["data", "fetch", "--help"])
    text = capsys.readouterr().out
    assert info.value.code == 0 and "SHA-256" in text and MIRROR_VAR in text and "--dir" in text
    assert all(file.url in text for release in RELEASES.values() for file in release.files)


def test_a_progress_bar_when_asked(mirror, tmp_path, monkeypatch, capsys):
    pytest.importorskip("tqdm")
    publish_mnist(monkeypatch, mirror, tmp_path)
    fetch_dataset("mnist", tmp_path / "root", mirror=mirror.url, progress=True, log=None)
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz" in err and "100%" in err
