"""Study-level limits with real worker processes (issue 12 §1 and §3): a grid runs each
point once across workers and its study ends completed; whatever Optuna raises after a
trial's result is final changes nothing; no trial starts after the study's timeout."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import httpx
import optuna
import pytest
from sqlalchemy import select

from service.core.db.engine import session_scope
from service.core.db.models import Study, TrialRecord
from service.core.settings import Settings
from service.studies.service import create_study
from service.studies.spec import StudySpec
from service.worker import trial as trial_module
from service.worker.process import WorkerProcess
from tests.conftest import tiny_spec, unique
from tests.study_checks import check_quiet_study, configs, run_workers, warm_up, worker_settings

pytestmark = pytest.mark.slow  # real worker processes


def one_epoch(name: str, n_trials: int, **overrides: Any) -> dict[str, Any]:
    spec = tiny_spec(name, n_trials, **overrides)
    spec["objective"] = {"metric": "val_accuracy", "max_epochs": 1}
    return spec


def submit(url: str, raw: dict[str, Any]) -> int:
    with session_scope(url) as session:
        return create_study(session, StudySpec.model_validate(raw)).id


def test_grid_points_run_once_across_two_workers_and_the_study_completes(
    database_url: str,
) -> None:
    """The issue's two cases: a 2-point grid with n_trials 2, a 2 x 2 grid with n_trials 4,
    both on 2 workers (before: 4 and 8 trials, repeated points, study `failed`)."""
    grids = {
        "optimizer": {"optimizer": {"type": "categorical", "choices": ["sgd", "adam"]}},
        "optimizer x batch": {
            "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
            "batch_size": {"type": "categorical", "choices": [16, 32]},
        },
    }
    studies = {}
    for label, space in grids.items():
        name = unique("grid")
        n = 2 if len(space) == 1 else 4
        raw = one_epoch(name, n, space=space, sampler={"name": "grid"})
        studies[label] = (name, n, submit(database_url, raw))

    run_workers(worker_settings(database_url), [name for name, _, _ in studies.values()], n=2)

    for label, (_, n, study_id) in studies.items():
        picture = check_quiet_study(database_url, study_id)
        assert picture.status == "completed", label
        points = configs(picture, list(grids[label]))
        assert len(points) == n and len(set(points)) == n, (label, points)  # the whole grid
        assert picture.counts["fail"] == 0 and len(picture.trials) == n, label
        with session_scope(database_url) as session:
            study = session.get(Study, study_id)
            errors = session.scalars(
                select(TrialRecord.error).where(TrialRecord.study_id == study_id)
            ).all()
        assert study is not None and study.error is None
        assert set(errors) == {None}


class RaisingAfterTrial(optuna.samplers.RandomSampler):
    """A sampler that raises in `after_trial`, as GridSampler does once it believes the
    grid used up (`Study.stop()` outside `optimize()`)."""

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: optuna.trial.TrialState,
        values: Any,
    ) -> None:
        raise RuntimeError("`Study.stop` is supposed to be invoked inside an objective function.")


def test_an_error_optuna_raises_after_the_result_is_final_changes_nothing(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique("raises-after")
    study_id = submit(database_url, one_epoch(name, 3))
    monkeypatch.setattr(trial_module, "build_sampler", lambda spec, i: RaisingAfterTrial(seed=i))

    WorkerProcess(worker_settings(database_url), [name]).run(until_idle=True, install_signals=False)

    picture = check_quiet_study(database_url, study_id)
    assert picture.status == "completed"
    assert picture.counts == {"running": 0, "complete": 3, "pruned": 0, "fail": 0, "waiting": 0}
    assert len(picture.trials) == 3  # no slot was given back: not one trial more


def test_no_trial_starts_after_the_timeout_and_running_ones_finish(database_url: str) -> None:
    """A 5 s timeout on 2 workers (before: trials kept starting for up to a sweep period,
    10 s, after it). The issue used n_trials 100, which an idle machine finishes inside 5 s
    with 1-epoch trials; 10,000 keeps the deadline, not the budget, the limit that ends it."""
    warm_up()
    name = unique("timeout")
    raw = one_epoch(name, 10_000, budget={"n_trials": 10_000, "timeout_seconds": 5})
    study_id = submit(database_url, raw)

    run_workers(worker_settings(database_url), [name], n=2)

    picture = check_quiet_study(database_url, study_id)
    with session_scope(database_url) as session:
        study = session.get(Study, study_id)
        assert study is not None and study.deadline_at is not None
        deadline = study.deadline_at
    assert picture.status == "completed"
    assert 0 < len(picture.trials) < 10_000
    assert picture.counts["fail"] == 0  # the trials running at the deadline finished
    claimed = [r.started_at for r in picture.records]
    assert max(claimed) <= deadline, (max(claimed), deadline)
    # Optuna's start of each trial is its claim's time.
    starts = [t.datetime_start for t in picture.trials]
    assert all(s is not None for s in starts)
    local_deadline = deadline.replace(tzinfo=UTC).astimezone().replace(tzinfo=None)
    assert max(s for s in starts if s is not None) <= local_deadline


def test_a_grid_budget_above_the_grid_size_is_refused(
    client: httpx.Client, settings: Settings
) -> None:
    name = unique("grid-too-many")
    space = {
        "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
        "batch_size": {"type": "categorical", "choices": [16, 32]},
    }
    raw = one_epoch(name, 5, space=space, sampler={"name": "grid"})
    answer = client.post("/api/studies", json=raw)
    assert answer.status_code == 422, answer.text
    [problem] = answer.json()["detail"]
    assert problem["loc"] == ["body", "budget", "n_trials"]
    assert "the grid has 4 points" in problem["msg"]
    with session_scope(settings.database_url) as session:
        assert session.scalar(select(Study.id).where(Study.name == name)) is None
    raw["budget"] = {"n_trials": 4}
    assert client.post("/api/studies", json=raw).status_code == 201
