"""`hpo worker` on a GPU node: one worker process per GPU slot, under a small supervisor.

Each child is pinned to its GPU with CUDA_VISIBLE_DEVICES (so it trains on `cuda`, which
is that GPU), restarted if it dies, and stopped with SIGTERM when this process is. Without
GPUs the slots are CPU processes. A single slot runs in this process, with no supervisor.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

import torch

from service.core.settings import Settings
from service.worker.gpus import Slot, plan_slots
from service.worker.supervisor import LocalWorkers

log = logging.getLogger("hpo.worker")


def node_slots(gpus: str | None, trials_per_gpu: int, device: str | None) -> list[Slot]:
    """The worker slots `hpo worker --gpus/--trials-per-gpu/--device` asks for on this node;
    raises ValueError on a `--gpus` this node cannot satisfy."""
    count = torch.cuda.device_count() if device != "cpu" else 0
    if gpus is None and device is not None:
        # An explicit device without --gpus: this process is the worker (the children of a
        # pool and of `hpo serve` are started this way).
        return [Slot(device)] * trials_per_gpu
    slots = plan_slots(gpus, trials_per_gpu, device, count)
    if gpus is not None and count == 0 and device != "cpu":
        log.warning("--gpus %s: no GPU on this node; running %d CPU worker(s)", gpus, len(slots))
    return slots


def run_pool(
    settings: Settings,
    slots: list[Slot],
    *,
    studies: list[str] | None = None,
    worker_args: list[str] | None = None,
) -> int:
    """Supervise one worker process per slot until SIGTERM/SIGINT, or until every child
    exited 0 (with --until-idle or --max-trials). Returns 0, or 130 when stopped by
    SIGINT (Ctrl-C); a second signal while the children stop kills them."""
    signalled: list[int] = []
    workers = LocalWorkers(settings, slots, studies=studies, worker_args=worker_args)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # No locks in a signal handler (Event.set could deadlock with the main thread's
        # own wait): just record it.
        signalled.append(signum)
        if len(signalled) > 1:
            workers.hurry = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    workers.start()
    described = ", ".join(
        f"{s.device}" + (f" (GPU {s.visible_devices})" if s.visible_devices else "") for s in slots
    )
    log.info("supervising %d worker process(es): %s", len(slots), described)
    while not signalled and not workers.all_done():
        time.sleep(0.2)
    if signalled:
        log.info("signal %d: stopping %d worker process(es)", signalled[0], len(slots))
    workers.stop()
    return 128 + signal.SIGINT if signalled[:1] == [signal.SIGINT] else 0
