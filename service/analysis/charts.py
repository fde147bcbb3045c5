"""The data behind the study and trial charts: histories, downsampled curves, importances."""

from __future__ import annotations

import threading
from collections import OrderedDict

import optuna
from optuna.trial import create_trial
from sqlalchemy.orm import Session

from service.analysis.chart_schemas import (
    Importances,
    StudyCurves,
    StudyHistory,
    TrialCurve,
    TrialCurves,
)
from service.analysis.downsample import lttb
from service.core.db.engine import database_url
from service.core.db.models import Study
from service.core.errors import TrialNotFound
from service.core.optuna_compat import rdb_models as om
from service.studies.cache import VersionedCache, cached, cached_counts, study_version
from service.studies.pareto import complete_values, objectives_of
from service.studies.queries import (
    curve_trials,
    curves_of,
    study_history,
    trial_exists,
)
from service.studies.samples import complete_sample, history_filter
from service.studies.schemas import TrialCounts
from service.studies.service import get_study_row
from service.studies.spec import load_spec

_histories: VersionedCache[StudyHistory] = VersionedCache(maxsize=32)


def history(session: Session, study_id: int) -> StudyHistory:
    """Every trial of the study as columns (one value per trial); past
    `samples.HISTORY_MAX_POINTS` trials, the downsampled history of `studies.samples` (an
    even sample plus every best-so-far step). Kept per study version (`studies.cache`).
    Raises StudyNotFound."""
    study = get_study_row(session, study_id)
    version = study_version(session, study)
    counts = cached_counts(session, study, version)
    return cached(_histories, session, study, lambda: _history(session, study, counts), version)


def _history(session: Session, study: Study, counts: TrialCounts) -> StudyHistory:
    objectives = objectives_of(load_spec(study.spec))
    total = sum(counts.model_dump().values())
    where = history_filter(session, study.optuna_study_id, total, str(objectives[0].direction))
    h = study_history(session, study, where)
    # Every objective's value: Pareto studies only (a single objective's is `value`).
    complete = (
        complete_values(session, study.optuna_study_id, len(objectives))
        if len(objectives) > 1
        else {}
    )
    return StudyHistory(
        study_id=study.id,
        direction=objectives[0].direction,
        metric=objectives[0].metric,
        objectives=objectives,
        count=len(h.trial_id),
        total=total,
        downsampled=where is not None,
        trial_id=h.trial_id,
        number=h.number,
        state=h.state,
        value=h.value,
        values=[c.values if (c := complete.get(t)) else None for t in h.trial_id],
        duration_seconds=h.duration_seconds,
        last_step=h.last_step,
        reason=h.reason,
        params=h.params,
    )


def study_curves(
    session: Session, study_id: int, metric: str | None, top: int, max_points: int
) -> StudyCurves:
    """The `metric` curves (default: the objective's) of the `top` best trials, each
    downsampled to at most `max_points`; raises StudyNotFound."""
    study = get_study_row(session, study_id)
    spec = load_spec(study.spec)
    metric = metric or spec.objective.metric
    direction = objectives_of(spec)[0].direction  # the order of `curve_trials`' best
    picked = curve_trials(session, study.optuna_study_id, direction, top)
    curves = curves_of(session, (t.trial_id for t in picked), [metric])
    counts = cached_counts(session, study, study_version(session, study))
    total = sum(counts.model_dump().values())
    return StudyCurves(
        study_id=study.id,
        metric=metric,
        total=total,
        trials=[
            TrialCurve(
                trial_id=t.trial_id,
                number=t.number,
                state=t.state,
                value=t.value,
                n_points=len(points := curves[t.trial_id].get(metric, [])),
                points=lttb(points, max_points),
            )
            for t in picked
        ],
    )


def trial_curves(
    session: Session, trial_id: int, metrics: list[str] | None, max_points: int
) -> TrialCurves:
    """The trial's curves (all metrics, or `metrics`), each downsampled to at most
    `max_points`; raises TrialNotFound."""
    if not trial_exists(session, trial_id):
        raise TrialNotFound(trial_id)
    curves = curves_of(session, [trial_id], metrics)[trial_id]
    return TrialCurves(
        trial_id=trial_id,
        n_points={m: len(p) for m, p in curves.items()},
        curves={m: lttb(p, max_points) for m, p in curves.items()},
    )


# Optuna's default, fANOVA, walks a 64-tree random forest in Python: fine for a hundred trials,
# minutes for thousands. Past FANOVA_MAX_TRIALS, PED-ANOVA (Optuna's fast evaluator: which
# params tell the top 10% of trials from the rest) takes over, on an even sample of at most
# about SAMPLE_TRIALS complete trials chosen in SQL (`studies.samples.complete_sample`):
# building an in-memory Optuna study costs ~2 ms a trial. Either way computed once per study
# and number of complete trials.
FANOVA_MAX_TRIALS = 100
_importance_cache: OrderedDict[tuple[str, int, int], Importances] = OrderedDict()
_importance_lock = threading.Lock()


def importances(session: Session, study_id: int) -> Importances:
    """Importances of the searched params over the complete trials: Optuna's fANOVA, or
    PED-ANOVA for studies of more than FANOVA_MAX_TRIALS complete trials; raises
    StudyNotFound."""
    study = get_study_row(session, study_id)
    n_complete = cached_counts(session, study, study_version(session, study)).complete
    key = (database_url(session), study_id, n_complete)
    with _importance_lock:
        if key in _importance_cache:
            return _importance_cache[key]
    sample = complete_sample(session, study.optuna_study_id, n_complete)
    complete = om.TrialModel.state == optuna.trial.TrialState.COMPLETE
    h = study_history(session, study, complete if sample is None else sample)
    done = [i for i, v in enumerate(h.value) if v is not None]
    if sample is None:
        n_complete = len(done)  # those with a finite value
    large = n_complete > FANOVA_MAX_TRIALS
    result = Importances(
        study_id=study_id,
        n_complete=n_complete,
        n_used=len(done),
        evaluator="ped-anova" if large else "fanova",
        importances={},
    )
    if len(done) >= 2 and h.distributions:
        # A multi-objective study's importances are those for its first objective.
        first = objectives_of(load_spec(study.spec))[0]
        scratch = optuna.create_study(
            direction="maximize" if first.direction == "maximize" else "minimize"
        )
        scratch.add_trials(
            create_trial(
                params={p: col[i] for p, col in h.params.items() if col[i] is not None},
                distributions={
                    p: h.distributions[p] for p, col in h.params.items() if col[i] is not None
                },
                value=h.value[i],
            )
            for i in done
        )
        evaluator: optuna.importance.BaseImportanceEvaluator = (
            optuna.importance.PedAnovaImportanceEvaluator()
            if large
            else optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
        try:
            found = optuna.importance.get_param_importances(scratch, evaluator=evaluator)
        except (ValueError, RuntimeError):  # e.g. every searched param held one value
            found = {}
        result.importances = {k: float(v) for k, v in found.items()}
    with _importance_lock:
        _importance_cache[key] = result
        while len(_importance_cache) > 64:
            _importance_cache.popitem(last=False)
    return result
