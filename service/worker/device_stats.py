"""What a worker's heartbeat reports of its device: memory in use and utilization.

Read each heartbeat (every few seconds), written to the worker's `hpo_workers` row and served
by `/metrics` (`hpo_worker_device_*`). On CPU, or where CUDA or NVML cannot say, nothing is
reported: the columns stay NULL and the gauges have no sample, never an error.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def device_sample(device: str) -> dict[str, int | float]:
    """{gpu_memory_used_mb: MiB in use on the whole device (every process's, as
    `nvidia-smi` shows), gpu_utilization: percent of the last NVML sample period}, each only
    when it can be read; {} on CPU."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return {}
    out: dict[str, int | float] = {}
    try:
        free, total = torch.cuda.mem_get_info(torch.device(device))
        out["gpu_memory_used_mb"] = int((total - free) // 2**20)
    except Exception as e:  # a lost device must not stop the heartbeat
        log.debug("device memory unreadable: %s", e)
    try:
        out["gpu_utilization"] = float(torch.cuda.utilization(torch.device(device)))
    except Exception as e:  # no NVML (pynvml / nvidia-ml-py) on this node
        log.debug("device utilization unreadable: %s", e)
    return out
