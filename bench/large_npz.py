"""A real worker trains from a large NPZ under a data root without loading it (issue 15 §4).

Writes an uncompressed NPZ of `--rows` x `--features` float32 (default 1.1 M x 256, about
1.1 GB; streamed to disk in chunks, never whole in this process) with 4 classes, and a small
one of the same kind (`--baseline-rows`, the baseline), under a temporary root. For each,
submits a 1-epoch study of a tiny MLP (`dataset: {name, path}`) into a new migrated SQLite
database and runs `hpo worker --until-idle` in a subprocess with `HPO_DATA_ROOTS` set to
that root; its peak resident set (VmHWM, from `wait4`'s ru_maxrss) is compared with the
file's size. The baseline run gives the worker's own footprint (Python, torch, the
database, the model); the difference is what the data cost.

    python bench/large_npz.py [--rows 1100000] [--features 256] [--keep]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from service.core.db.engine import session_scope
from service.core.db.migrate import upgrade
from service.core.db.models import DatasetBlob, TrialRecord
from service.studies.service import create_study
from service.studies.spec import StudySpec

CLASSES = 4
CHUNK_ROWS = 65536


def write_npz(path: Path, rows: int, features: int, seed: int = 0) -> int:
    """An np.savez-compatible NPZ (members stored, not deflated) of x (rows, features)
    float32 and y (rows,) int64, written chunk by chunk; returns its size in bytes."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLASSES, features)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=rows)
    header = {"descr": "<f4", "fortran_order": False, "shape": (rows, features)}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_2_0(f, header)  # type: ignore[arg-type]
            for start in range(0, rows, CHUNK_ROWS):
                part = y[start : start + CHUNK_ROWS]
                noise = rng.standard_normal((len(part), features), dtype=np.float32) * 3
                f.write((centres[part] + noise).astype(np.float32).tobytes())
        with archive.open("y.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, y.astype(np.int64))
    return path.stat().st_size


def run_worker(root: Path, rows: int, features: int, work: Path) -> dict[str, float]:
    """Write the file, submit the study, run one worker; its peak RSS and the outcome."""
    file = root / f"data-{rows}.npz"
    size = write_npz(file, rows, features)
    url = f"sqlite:///{work / f'bench-{rows}.db'}"
    upgrade(url)
    spec = StudySpec.model_validate(
        {
            "name": f"large-npz-{rows}",
            "dataset": {"name": "big", "path": str(file), "test_fraction": 0.1},
            "objective": {"metric": "val_accuracy", "max_epochs": 1},
            "fixed": {"hidden_layers": 1, "hidden_units": 32, "batch_size": 1024, "lr": 1e-3},
            "sampler": {"name": "random", "seed": 0},
            "budget": {"n_trials": 1},
        }
    )
    with session_scope(url) as session:
        create_study(session, spec)
    env = {
        **os.environ,
        "HPO_DATA_ROOTS": str(root),
        "HPO_DATA_DIR": str(work / "data"),
        "HPO_WORKER_POLL_SECONDS": "0.2",
    }
    hpo = Path(sys.executable).parent / "hpo"
    command = [str(hpo), "worker", "--database-url", url, "--until-idle", "--threads", "2"]
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    with session_scope(url) as session:
        state, error = session.execute(select(TrialRecord.state, TrialRecord.error)).one()
        blobs = session.scalar(select(func.count()).select_from(DatasetBlob))
    if proc.returncode != 0 or state != "complete":
        raise SystemExit(f"worker exit {proc.returncode}, trial {state}: {error}\n{stderr[-3000:]}")
    if not os.environ.get("KEEP"):
        file.unlink()
    return {
        "file_bytes": size,
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # Linux reports KiB
        "seconds": seconds,
        "blobs_in_database": blobs or 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_100_000)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--baseline-rows", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = work / "root"
        root.mkdir()
        base = run_worker(root, args.baseline_rows, args.features, work)
        large = run_worker(root, args.rows, args.features, work)
    gib = 2**30
    print(f"rows x features: {args.rows} x {args.features} float32 (baseline {args.baseline_rows})")
    for name, r in (("baseline", base), ("large", large)):
        print(
            f"{name:9s} file {r['file_bytes'] / gib:6.3f} GiB  worker peak RSS "
            f"{r['peak_rss_bytes'] / gib:6.3f} GiB  wall {r['seconds']:6.1f} s  "
            f"dataset blobs in the database: {r['blobs_in_database']}"
        )
    extra = large["peak_rss_bytes"] - base["peak_rss_bytes"]
    print(f"peak RSS, large / baseline: {large['peak_rss_bytes'] / base['peak_rss_bytes']:.2f}x")
    print(
        f"peak RSS over the baseline: {extra / gib:.3f} GiB = "
        f"{extra / large['file_bytes']:.3f} x the file's size"
    )
    print(f"peak RSS / file size: {large['peak_rss_bytes'] / large['file_bytes']:.3f}")


if __name__ == "__main__":
    main()
