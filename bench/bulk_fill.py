"""Bulk-fill a study of N finished trials straight into Optuna's tables and ours, as workers
would have left them: one executemany per table (batches of 20,000 rows), no Optuna API.

Used by bench/api_scale.py and by the query-count tests (tests/test_scale_api.py). Each trial
gets a state (70% complete, 25% pruned, 5% failed, a few running at the end), the five
params of `SPACE`, a value, a service record and stored findings; every `curve_every`-th
trial also gets `epochs` intermediate values and curve points.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from datetime import timedelta
from typing import Any

from optuna.distributions import CategoricalDistribution, FloatDistribution, distribution_to_json
from optuna.trial import TrialState
from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from service.core.db.engine import session_scope
from service.core.db.models import (
    CurvePoint,
    FindingKind,
    TrialDiagnosis,
    TrialRecord,
    utcnow,
)
from service.core.optuna_compat import rdb_models as om
from service.studies import service as study_service
from service.studies.spec import StudySpec

SPACE: dict[str, Any] = {
    "lr": FloatDistribution(1e-4, 1e-1, log=True),
    "dropout": FloatDistribution(0.0, 0.5),
    "weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
    "batch_size": CategoricalDistribution([32, 64, 128]),
    "optimizer": CategoricalDistribution(["sgd", "momentum", "adam", "rmsprop"]),
}
SPEC_SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
    "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
    "optimizer": {"type": "categorical", "choices": ["sgd", "momentum", "adam", "rmsprop"]},
}
KINDS = ("good_fit", "overfit", "underfit", "still_improving", "dead_units")
FINITE = om.TrialValueModel.TrialValueType.FINITE
FINITE_STEP = om.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE
BATCH = 20_000


def spec_of(name: str, n_trials: int, epochs: int, metric: str = "val_accuracy") -> StudySpec:
    return StudySpec.model_validate(
        {
            "name": name,
            "dataset": {"name": "digits"},
            "objective": {"metric": metric, "max_epochs": epochs},
            "space": SPEC_SPACE,
            "budget": {"n_trials": n_trials},
        }
    )


def _insert(session: Session, model: Any, rows: list[dict[str, Any]]) -> None:
    for i in range(0, len(rows), BATCH):
        session.execute(insert(model), rows[i : i + BATCH])


def _state(rng: random.Random, k: int, n: int, running: int) -> TrialState:
    if k >= n - running:
        return TrialState.RUNNING
    r = rng.random()
    return TrialState.COMPLETE if r < 0.7 else TrialState.PRUNED if r < 0.95 else TrialState.FAIL


def bulk_fill(
    url: str,
    name: str,
    n_trials: int,
    *,
    epochs: int = 20,
    curve_every: int = 100,
    running: int = 2,
    seed: int = 0,
    diagnose: bool = True,
    metric: str = "val_accuracy",
) -> int:
    """Create study `name` through the service and write `n_trials` trials into it; returns
    the service's study id. Trial ids continue after the database's largest (PostgreSQL's
    sequence is moved past them, so Optuna's own inserts go on working)."""
    with session_scope(url) as session:
        study_id = study_service.create_study(session, spec_of(name, n_trials, epochs, metric)).id
        optuna_id = study_service.get_study_row(session, study_id).optuna_study_id
        first = (session.scalar(select(func.max(om.TrialModel.trial_id))) or 0) + 1
    rng = random.Random(seed)
    dist_json = {k: distribution_to_json(d) for k, d in SPACE.items()}
    start = utcnow() - timedelta(seconds=10 * n_trials)
    rows: dict[Any, list[dict[str, Any]]] = {
        om.TrialModel: [],
        om.TrialValueModel: [],
        om.TrialParamModel: [],
        om.TrialIntermediateValueModel: [],
        TrialRecord: [],
        CurvePoint: [],
        TrialDiagnosis: [],
        FindingKind: [],
    }
    for k in range(n_trials):
        tid = first + k
        state = _state(rng, k, n_trials, running)
        began = start + timedelta(seconds=10 * k)
        ended = None if state == TrialState.RUNNING else began + timedelta(seconds=5 + k % 7)
        rows[om.TrialModel].append(
            {
                "trial_id": tid,
                "number": k,
                "study_id": optuna_id,
                "state": state,
                "datetime_start": began,
                "datetime_complete": ended,
            }
        )
        final = rng.uniform(0.5, 0.99)
        if state == TrialState.COMPLETE:
            rows[om.TrialValueModel].append(
                {"trial_id": tid, "objective": 0, "value": final, "value_type": FINITE}
            )
        for param, d in SPACE.items():
            external = (
                rng.choice(d.choices)
                if isinstance(d, CategoricalDistribution)
                else rng.uniform(d.low, d.high)
            )
            rows[om.TrialParamModel].append(
                {
                    "trial_id": tid,
                    "param_name": param,
                    "param_value": d.to_internal_repr(external),
                    "distribution_json": dist_json[param],
                }
            )
        steps = epochs if state == TrialState.COMPLETE else max(1, epochs // 3)
        if k % curve_every == 0 and state != TrialState.RUNNING:
            curve = [final * (1 - math.exp(-5 * s / epochs)) for s in range(1, steps + 1)]
            for s, v in enumerate(curve, 1):
                rows[om.TrialIntermediateValueModel].append(
                    {
                        "trial_id": tid,
                        "step": s,
                        "intermediate_value": v,
                        "intermediate_value_type": FINITE_STEP,
                    }
                )
                for curve_metric in ("val_accuracy", "val_loss"):
                    rows[CurvePoint].append(
                        {"trial_id": tid, "step": s, "metric": curve_metric, "value": v}
                    )
        rows[TrialRecord].append(
            {
                "study_id": study_id,
                "optuna_trial_id": tid,
                "number": k,
                "claim_index": k,
                "state": state.name.lower(),
                "error": "ValueError: boom" if state == TrialState.FAIL else None,
                "started_at": began,
                "finished_at": ended,
            }
        )
        if diagnose and state != TrialState.RUNNING:
            findings = [
                {"kind": kind, "severity": "info", "evidence": {"epoch": steps}, "remedies": []}
                for kind in rng.sample(KINDS, rng.randint(1, 2))
            ]
            rows[TrialDiagnosis].append(
                {"trial_id": tid, "study_id": study_id, "findings": findings}
            )
            for kind, n in Counter(f["kind"] for f in findings).items():
                rows[FindingKind].append(
                    {"trial_id": tid, "kind": kind, "study_id": study_id, "n": n}
                )
    n_running = sum(1 for r in rows[TrialRecord] if r["state"] == "running")
    with session_scope(url) as session:
        for model, batch in rows.items():
            _insert(session, model, batch)
        row = study_service.get_study_row(session, study_id)
        row.slots_used = n_trials
        row.n_claims = n_trials
        row.n_running = n_running
        row.n_failed = sum(1 for r in rows[TrialRecord] if r["state"] == "fail")
        if session.get_bind().dialect.name == "postgresql":
            session.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence('trials', 'trial_id'), "
                    "(SELECT max(trial_id) FROM trials))"
                )
            )
    return study_id
