"""Which GPUs a node has, and how `hpo worker` splits them into worker-process slots."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Slot:
    """One worker process: its device, and the GPU it is pinned to (CUDA_VISIBLE_DEVICES)."""

    device: str | None  # None: the worker picks (cuda if available)
    visible_devices: str | None = None

    def env(self) -> dict[str, str]:
        return (
            {} if self.visible_devices is None else {"CUDA_VISIBLE_DEVICES": self.visible_devices}
        )


def parse_gpus(gpus: str, device_count: int) -> list[str]:
    """`all` or a comma-separated list of GPU indices -> the indices to use, validated."""
    if gpus.strip() == "all":
        return [str(i) for i in range(device_count)]
    picked = [g.strip() for g in gpus.split(",") if g.strip()]
    bad = [g for g in picked if not g.isdigit()]
    if bad or not picked:
        raise ValueError(f"--gpus: expected 'all' or indices like 0,1; got {gpus!r}")
    if len(set(picked)) != len(picked):
        raise ValueError(f"--gpus: {gpus!r} names a GPU twice")
    missing = [g for g in picked if int(g) >= device_count]
    if missing:
        raise ValueError(
            f"--gpus: no GPU {', '.join(missing)} on this node ({device_count} visible)"
        )
    return picked


def plan_slots(
    gpus: str | None, trials_per_gpu: int, device: str | None, device_count: int
) -> list[Slot]:
    """One slot per (GPU, k < trials_per_gpu); without GPUs (or with --device cpu),
    `trials_per_gpu` CPU processes."""
    if trials_per_gpu < 1:
        raise ValueError(f"--trials-per-gpu: must be >= 1, got {trials_per_gpu}")
    if device == "cpu" or device_count == 0:
        return [Slot("cpu")] * trials_per_gpu
    indices = parse_gpus(gpus or "all", device_count)
    # Pinned with CUDA_VISIBLE_DEVICES, each process sees its GPU as cuda:0.
    return [Slot("cuda", g) for g in indices for _ in range(trials_per_gpu)]


def gpu_info(device: str) -> tuple[str | None, int | None]:
    """(name, total memory in MiB) of the GPU behind `device`, or (None, None) on CPU."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None, None
    index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return str(props.name), int(props.total_memory // 2**20)
