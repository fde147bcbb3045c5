"""How close is the trainer's epoch to the hardware, and what does it save over a DataLoader?

For an MLP (2 hidden layers of 128, ReLU, Adam) on digits-size data (1078 x 64, the
training split of `digits`) and on a synthetic 60,000 x 784 set, at batch sizes 32, 128 and
512, one training epoch (no evaluation) is timed for:
- trainer:        trainer.loop.train_epoch with gradient telemetry on (the service default)
- trainer -tel:   the same with telemetry off (TrainConfig(telemetry=False))
- hand loop:      a minimal PyTorch loop over the same on-device tensors, slicing batches
                  out of a permutation: forward -> cross-entropy -> backward -> Adam step
- DataLoader:     the textbook loop over DataLoader(TensorDataset(x, y), shuffle=True) with
                  the data in host memory and each batch moved to the device
All four train copies of one model, run interleaved, the median of `--repeats` epochs each.
Printed: trainer / hand loop (goal <= 1.05), DataLoader / trainer (goal >= 4), and the
trainer's achieved training FLOP/s over torch.mm's FLOP/s for the same matrix products
(forward X·Wᵀ, backward dY·W and dYᵀ·X per layer; 6·Σ fan_in·fan_out FLOPs per example,
less the unneeded input gradient of the first layer).

    python bench/trainer_throughput.py [--repeats 3] [--sets digits,synthetic]
        [--batch-sizes 32,128,512] [--devices cpu[,cuda]] [--synthetic-rows 60000] [--threads N]
        [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from trainer.config import TrainConfig
from trainer.data import TensorData, load_dataset
from trainer.loop import train_epoch
from trainer.model import TrainerModel, build_model, weight_layers
from trainer.optim import build_optimizer
from trainer.telemetry import GradientTelemetry

HIDDEN_LAYERS, HIDDEN_UNITS = 2, 128


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def dataset(name: str, device: str, rows: int) -> TensorData:
    if name == "digits":
        return TensorData.from_splits(load_dataset("digits", seed=0), device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 784, generator=g)
    y = torch.randint(0, 10, (rows,), generator=g)
    x, y = x.to(device), y.to(device)
    return TensorData(x, y, x[:1000], y[:1000], x[:0], y[:0], n_classes=10)


def layer_sizes(model: TrainerModel) -> list[tuple[int, int]]:
    sizes = []
    for layer in weight_layers(model):
        w = layer.weight
        assert isinstance(w, torch.Tensor)
        sizes.append((int(w.shape[1]), int(w.shape[0])))
    return sizes


def train_flops(sizes: list[tuple[int, int]], n: int) -> float:
    """Matrix-product FLOPs of one epoch over n examples (forward + both backward products)."""
    per_example = sum(6 * fi * fo for fi, fo in sizes) - 2 * sizes[0][0] * sizes[0][1]
    return float(per_example * n)


def mm_seconds(sizes: list[tuple[int, int]], batch: int, n: int, device: str) -> float:
    """Time of the epoch's matrix products alone, done by torch.mm at the same shapes."""
    g = torch.Generator().manual_seed(0)
    mats = []
    for i, (fi, fo) in enumerate(sizes):
        x = torch.randn(batch, fi, generator=g).to(device)
        w = torch.randn(fo, fi, generator=g).to(device)
        dy = torch.randn(batch, fo, generator=g).to(device)
        mats.append((x, w, dy, i > 0))
    steps = -(-n // batch)

    def one_epoch() -> None:
        for _ in range(steps):
            for x, w, dy, needs_dx in mats:
                torch.mm(x, w.t())
                torch.mm(dy.t(), x)
                if needs_dx:
                    torch.mm(dy, w)

    one_epoch()  # warm-up
    return timed(one_epoch, device)


def hand_loop(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    data: TensorData,
    batch: int,
    g: torch.Generator,
) -> None:
    x, y = data.x_train, data.y_train
    perm = torch.randperm(x.shape[0], generator=g).to(x.device)
    for start in range(0, x.shape[0], batch):
        idx = perm[start : start + batch]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()


def dataloader_loop(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    loader: DataLoader[tuple[torch.Tensor, ...]],
    device: str,
) -> None:
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()


# wall: perf_counter. cpu: this process's CPU time, which a machine shared with other
# work disturbs far less (use it with --threads 1; CPU devices only).
CLOCK: Callable[[], float] = time.perf_counter


def timed(fn: Callable[[], object], device: str) -> float:
    sync(device)
    started = CLOCK()
    fn()
    sync(device)
    return CLOCK() - started


def bench_one(data: TensorData, batch: int, device: str, repeats: int) -> dict[str, float]:
    cfg = TrainConfig(
        hidden_layers=HIDDEN_LAYERS, hidden_units=HIDDEN_UNITS, batch_size=batch, optimizer="adam"
    )
    torch.manual_seed(0)
    base = build_model(cfg, tuple(data.x_train.shape[1:]), data.n_classes).to(device)
    runners: dict[str, Callable[[], object]] = {}
    for name, telemetry in (("trainer", True), ("trainer -tel", False)):
        model = copy.deepcopy(base)
        opt = build_optimizer(cfg, model)
        tel = GradientTelemetry(model) if telemetry else None
        g = torch.Generator().manual_seed(0)
        c = TrainConfig(**{**cfg.__dict__, "telemetry": telemetry})

        def run(
            m: TrainerModel = model,
            o: torch.optim.Optimizer = opt,
            t: GradientTelemetry | None = tel,
            gen: torch.Generator = g,
            conf: TrainConfig = c,
        ) -> None:
            train_epoch(m, o, data, conf, gen, t)
            if t is not None:
                t.epoch_values()  # the per-epoch sync the trainer pays

        runners[name] = run
    hand_model = copy.deepcopy(base)
    hand_opt = torch.optim.Adam(hand_model.parameters(), lr=cfg.lr)
    hand_g = torch.Generator().manual_seed(0)
    runners["hand loop"] = lambda: hand_loop(hand_model, hand_opt, data, batch, hand_g)
    dl_model = copy.deepcopy(base)
    dl_opt = torch.optim.Adam(dl_model.parameters(), lr=cfg.lr)
    # The textbook pattern: the dataset stays in host memory, each batch moves to the device.
    cpu_set = TensorDataset(data.x_train.cpu(), data.y_train.cpu())
    loader = DataLoader(cpu_set, batch_size=batch, shuffle=True, pin_memory=device != "cpu")
    runners["DataLoader"] = lambda: dataloader_loop(dl_model, dl_opt, loader, device)

    times: dict[str, list[float]] = {name: [] for name in runners}
    for fn in runners.values():
        timed(fn, device)  # warm-up epoch
    for _ in range(repeats):  # interleaved, so a change in machine load hits every loop
        for name, fn in runners.items():
            times[name].append(timed(fn, device))
    result = {name: statistics.median(ts) for name, ts in times.items()}
    n = int(data.x_train.shape[0])
    sizes = layer_sizes(base)
    result["flops"] = train_flops(sizes, n)
    result["mm"] = mm_seconds(sizes, batch, n, device)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sets", default="digits,synthetic")
    parser.add_argument("--batch-sizes", default="32,128,512")
    default_devices = "cpu,cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--devices", default=default_devices)
    parser.add_argument("--synthetic-rows", type=int, default=60_000)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.clock == "cpu":
        if "cuda" in args.devices:
            parser.error("--clock cpu times CPU work only; use --devices cpu")
        global CLOCK
        CLOCK = time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(
        f"torch {torch.__version__}, {threads} CPU threads, {args.clock} clock; "
        f"medians of {args.repeats} epochs"
    )
    header = (
        f"{'device':6} {'set':10} {'batch':>5} {'trainer s':>10} {'-tel s':>8} {'hand s':>8} "
        f"{'DL s':>8} {'tr/hand':>8} {'-tel/hand':>9} {'DL/tr':>6} {'GFLOP/s':>8} {'vs mm':>6}"
    )
    print(header)
    for device in args.devices.split(","):
        for set_name in args.sets.split(","):
            data = dataset(set_name, device, args.synthetic_rows)
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                r = bench_one(data, batch, device, args.repeats)
                achieved = r["flops"] / r["trainer"]
                mm_rate = r["flops"] / r["mm"]
                cells = [
                    f"{device:6} {set_name:10} {batch:5d}",
                    f"{r['trainer']:10.3f} {r['trainer -tel']:8.3f}",
                    f"{r['hand loop']:8.3f} {r['DataLoader']:8.3f}",
                    f"{r['trainer'] / r['hand loop']:8.2f}",
                    f"{r['trainer -tel'] / r['hand loop']:9.2f}",
                    f"{r['DataLoader'] / r['trainer']:6.1f}",
                    f"{achieved / 1e9:8.2f} {achieved / mm_rate:6.2f}",
                ]
                print(
                    " ".join(cells),
                    flush=True,
                )


if __name__ == "__main__":
    main()
