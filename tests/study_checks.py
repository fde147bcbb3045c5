"""Helpers for tests that run real worker processes against a study: start workers as real
processes cheaply, and check that a quiet study's status, counters, records and Optuna's
trials all tell the same story."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaState
from sqlalchemy import select

from service.core.db.engine import session_scope
from service.core.db.models import Study, TrialRecord
from service.core.optuna_storage import get_storage
from service.core.settings import Settings
from service.studies.service import get_study
from service.worker.faults import FAULT_ENV

# Worker processes are forked from a fork server that has imported the worker (torch
# included) once and never trained: each start then costs milliseconds instead of an import
# of torch, and no child inherits a thread pool of a parent that trained. torch._dynamo is
# what the first optimizer a process builds imports (7 s on a loaded machine).
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["service.worker.process", "torch._dynamo"])


def warm_up() -> None:
    """Start the fork server (it imports torch: seconds) before a test that races a clock."""
    proc = _CONTEXT.Process(target=int, daemon=True)
    proc.start()
    proc.join()


def worker_settings(url: str, grace_seconds: float = 600) -> Settings:
    """Settings of quick test workers: they poll and beat often; `grace_seconds` is how
    long a peer's heartbeat may be silent before their sweep declares it dead."""
    return Settings(
        database_url=url,
        worker_poll_seconds=0.05,
        heartbeat_seconds=0.2,
        worker_grace_seconds=grace_seconds,
        torch_threads=1,
    )


def run_workers(settings: Settings, studies: list[str], n: int) -> None:
    """`n` real worker processes side by side until no trial of `studies` is left."""
    procs = [start_worker(settings, studies) for _ in range(n)]
    for proc in procs:
        proc.join(timeout=600)
    assert [proc.exitcode for proc in procs] == [0] * n


def _run_worker(settings: Settings, studies: list[str], fault: str | None) -> None:
    from service.worker.process import WorkerProcess

    if fault is not None:
        os.environ[FAULT_ENV] = fault
    WorkerProcess(settings, studies).run(until_idle=True, install_signals=False)


def start_worker(
    settings: Settings, studies: list[str], fault: str | None = None
) -> multiprocessing.process.BaseProcess:
    """A real worker process running the trials of `studies` until none is left to claim;
    with `fault`, it SIGKILLs itself at that crash point (`service.worker.faults`)."""
    proc = _CONTEXT.Process(target=_run_worker, args=(settings, studies, fault), daemon=True)
    proc.start()
    return proc


@dataclass
class Picture:
    """A quiet study as the checks found it."""

    status: str
    trials: list[FrozenTrial]  # Optuna's, in number order
    records: list[TrialRecord]
    counts: dict[str, int]  # the API's counts by state

    def finished(self) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state in (OptunaState.COMPLETE, OptunaState.PRUNED)]

    def runs_of(self, params: dict[str, Any]) -> int:
        """Finished trials that ran with `params` (a subset of theirs)."""
        return sum(1 for t in self.finished() if params.items() <= t.params.items())


def check_quiet_study(url: str, study_id: int) -> Picture:
    """Assert what must hold for a study no worker is training: nothing RUNNING (in Optuna's
    table, the API's counts and our records), every record's state equal to its Optuna
    trial's, every Optuna trial known to a record, and the study's counters (`slots_used`,
    `n_running`, `n_failed`) equal to the states they count."""
    with session_scope(url) as session:
        study = session.get(Study, study_id)
        assert study is not None
        detail = get_study(session, study_id)  # what GET /api/studies/{id} answers
        records = list(
            session.scalars(select(TrialRecord).where(TrialRecord.study_id == study_id)).all()
        )
        session.expunge_all()
    trials = sorted(
        get_storage(url).get_all_trials(study.optuna_study_id, deepcopy=False),
        key=lambda t: t.number,
    )
    counts = detail.counts.model_dump()
    states = [t.state for t in trials]
    assert OptunaState.RUNNING not in states and OptunaState.WAITING not in states, states
    assert counts["running"] == 0 and counts.get("waiting", 0) == 0, counts
    assert [r.id for r in records if r.finished_at is None] == []
    by_trial = {r.optuna_trial_id: r for r in records if r.optuna_trial_id is not None}
    assert set(by_trial) == {t._trial_id for t in trials}, "an Optuna trial without a record"
    for t in trials:
        assert by_trial[t._trial_id].state == t.state.name.lower(), (t.number, t.state)
    n_complete, n_pruned, n_fail = (
        sum(1 for s in states if s == wanted)
        for wanted in (OptunaState.COMPLETE, OptunaState.PRUNED, OptunaState.FAIL)
    )
    assert (counts["complete"], counts["pruned"], counts["fail"]) == (n_complete, n_pruned, n_fail)
    assert study.n_running == 0
    assert study.slots_used == n_complete + n_pruned
    assert study.n_failed == n_fail, (study.n_failed, n_fail)
    return Picture(study.status, trials, records, counts)


def configs(picture: Picture, names: Sequence[str]) -> list[tuple[Any, ...]]:
    """The finished trials' values of `names`, in trial order."""
    return [tuple(t.params[n] for n in names) for t in picture.finished()]
