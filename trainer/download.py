"""Opt-in download of the image datasets, for workers on nodes with network access.

Only when a study's dataset says `download: true` and the files are not already in the
dataset's folder. Every file is checked against its published MD5 before it is kept (the
checksums torchvision uses too). `HPO_DATASET_MIRROR` replaces the base URL, e.g. with an
internal mirror (`https://mirror.example/datasets/`) or a local copy (`file:///srv/data/`).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.request
from pathlib import Path

# name -> (base URL, {file: md5}); files are fetched as base + file
SOURCES: dict[str, tuple[str, dict[str, str]]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion_mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "cifar10": (
        "https://www.cs.toronto.edu/~kriz/",
        {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
    ),
}


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, target: Path, md5: str) -> None:
    """Download `url` to `target` through a temporary file; keep it only if the MD5 matches."""
    partial = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
            while block := response.read(1 << 20):
                out.write(block)
        got = md5_of(partial)
        if got != md5:
            raise ValueError(f"download of {url}: MD5 {got} does not match the published {md5}")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def download_dataset(name: str, folder: Path) -> None:
    """Fetch the files of `name` that `folder` lacks (CIFAR-10: and unpack the archive)."""
    if name not in SOURCES:
        raise ValueError(f"dataset {name!r} cannot be downloaded; known: {sorted(SOURCES)}")
    base, files = SOURCES[name]
    base = os.environ.get("HPO_DATASET_MIRROR", base)
    if not base.endswith("/"):
        base += "/"
    folder.mkdir(parents=True, exist_ok=True)
    for file, md5 in files.items():
        target = folder / file
        unpacked = folder / file.removesuffix(".gz")
        if name == "cifar10":
            if (folder / "cifar-10-batches-py" / "data_batch_1").is_file():
                continue
        elif target.is_file() or unpacked.is_file():
            continue
        fetch(base + file, target, md5)
        if name == "cifar10":
            with tarfile.open(target) as tar:
                tar.extractall(folder, filter="data")  # no absolute paths, links or devices
            target.unlink()
