"""The worker's per-epoch log line: which study and trial, epoch/max, the objective, and how
long the epoch took. One INFO record per epoch per trial; its values also ride along as
`extra=` fields, so that `HPO_LOG_FORMAT=json` gives them as keys."""

from __future__ import annotations

import logging

import optuna

from trainer import EpochMetrics

log = logging.getLogger("hpo.worker.trial")


def log_epoch(
    trial: optuna.Trial, trial_id: int, metric: str, m: EpochMetrics, max_epochs: int
) -> None:
    """Log `study <name>: trial <number> (id <id>) epoch <e>/<max> <metric>=<value> (<s> s)`
    (the number, as the worker's other lines give it, and the id of `/api/trials/{id}`)."""
    if not log.isEnabledFor(logging.INFO):
        return
    study = trial.study.study_name.removeprefix("hpo:")
    value = m.values.get(metric)
    seconds = m.values.get("epoch_seconds")
    log.info(
        "study %s: trial %d (id %d) epoch %d/%d %s=%s (%s s)",
        study,
        trial.number,
        trial_id,
        m.epoch,
        max_epochs,
        metric,
        "-" if value is None else f"{value:.6g}",
        "-" if seconds is None else f"{seconds:.2f}",
        extra={
            "study": study,
            "trial_id": trial_id,
            "trial_number": trial.number,
            "epoch": m.epoch,
            "max_epochs": max_epochs,
            "metric": metric,
            "value": value,
            "epoch_seconds": seconds,
        },
    )
