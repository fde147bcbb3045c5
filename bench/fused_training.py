"""Fused training vs sequential training: K models of one structure, one epoch each.

For K = 1, 4, 16, 64 members (different seeds and learning rates, one structure) of
- mlp: digits-size MLP 64-128-128-10 (ReLU, Adam, batch 64, telemetry on as the service
  runs it) on the training split of `digits` (1078 x 64),
- cnn: a small CNN on digits images 1x8x8 (2 conv blocks of 8 and 16 channels, max pooling,
  one dense layer of 32, Adam, batch 64),
one epoch (training + the evaluation of both splits that `fit` does every epoch) is timed
two ways in the same process, interleaved:
- sequential: K calls of `trainer.loop.fit(config_i, data)`,
- fused:      one call of `trainer.fused.fit_fused(configs, data)`.
Printed: seconds per epoch of all K members both ways and the throughput ratio
sequential / fused (goal at K = 16 on the CPU: >= 2.5; on a GPU >= 10). Each figure is
the median of `--repeats` runs. `--clock cpu` times process CPU time instead of wall time,
which other processes on a shared machine disturb less (use it with --threads 1).
CUDA rows are added when CUDA is present (or `--devices cpu,cuda`).

    python bench/fused_training.py [--ks 1,4,16,64] [--families mlp,cnn] [--repeats 3]
        [--devices cpu[,cuda]] [--threads N] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable

import torch

from trainer.config import TrainConfig
from trainer.data import TensorData, load_dataset
from trainer.fused import fit_fused
from trainer.loop import fit

MLP = TrainConfig(
    hidden_layers=2, hidden_units=128, batch_size=64, optimizer="adam", lr=1e-3, max_epochs=1
)
CNN = TrainConfig(
    family="cnn",
    conv_blocks=2,
    conv_channels=8,
    hidden_layers=1,
    hidden_units=32,
    batch_size=64,
    optimizer="adam",
    lr=1e-3,
    max_epochs=1,
)


def _data(family: str, device: str) -> TensorData:
    shape = "image" if family == "cnn" else "flat"
    return TensorData.from_splits(load_dataset("digits", seed=0, shape=shape), device)


def _members(base: TrainConfig, k: int) -> list[TrainConfig]:
    return [dataclasses.replace(base, seed=i, lr=base.lr * (1 + 0.1 * i)) for i in range(k)]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _timed(run: Callable[[], object], device: str, clock: Callable[[], float]) -> float:
    _sync(device)
    start = clock()
    run()
    _sync(device)
    return clock() - start


def _measure(
    configs: list[TrainConfig],
    data: TensorData,
    device: str,
    clock: Callable[[], float],
    repeats: int,
) -> tuple[float, float]:
    """Median seconds of (K sequential fits, one fused fit), interleaved."""
    seq: list[float] = []
    fused: list[float] = []

    def sequential() -> None:
        for c in configs:
            fit(c, data)

    for _ in range(repeats):
        seq.append(_timed(sequential, device, clock))
        fused.append(_timed(lambda: fit_fused(configs, data), device, clock))
    return statistics.median(seq), statistics.median(fused)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ks", default="1,4,16,64")
    parser.add_argument("--families", default="mlp,cnn")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    ks = [int(k) for k in args.ks.split(",")]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, clock {args.clock}, "
        f"median of {args.repeats}"
    )
    print(f"{'family':6} {'device':6} {'K':>4} {'sequential s':>13} {'fused s':>9} {'ratio':>7}")
    for device in args.devices.split(","):
        if device == "cuda" and not torch.cuda.is_available():
            continue
        for family in args.families.split(","):
            data = _data(family, device)
            base = MLP if family == "mlp" else CNN
            fit(base, data)  # warm-up: first-call allocations and kernel selection
            fit_fused(_members(base, 2), data)
            for k in ks:
                s, f = _measure(_members(base, k), data, device, clock, args.repeats)
                print(
                    f"{family:6} {device:6} {k:>4} {s:>13.3f} {f:>9.3f} {s / f:>6.2f}x", flush=True
                )


if __name__ == "__main__":
    main()
