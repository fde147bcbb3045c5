"""Study report: what the trials' diagnoses, Optuna's importances and the best trials'
positions in the search space say, and a short paragraph of advice built from those facts."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.orm import Session

from service.analysis import charts, diagnoses
from service.analysis.remedies import NumericDist, widened
from service.analysis.schemas import BoundaryHit, Finding, StudyReport
from service.core.db.engine import database_url
from service.core.db.models import Study
from service.core.optuna_compat import rdb_models as om
from service.studies.cache import Version, VersionedCache, cached_counts, study_version
from service.studies.pareto import objectives_of
from service.studies.queries import study_history
from service.studies.samples import complete_sample
from service.studies.schemas import TrialCounts
from service.studies.service import best_trial, get_study_row
from service.studies.spec import Distribution, FloatDist, IntDist, load_spec
from trainer.params import PARAMS

# Optuna's importance evaluators need a few completed trials to say anything; below this
# many they fall back to "all equal", which would read as a finding.
MIN_TRIALS_FOR_IMPORTANCE = 4
# Boundary hits look at the best TOP_FRACTION of completed trials (at least TOP_MIN) ...
TOP_FRACTION = 0.25
TOP_MIN = 3
# ... and call an edge "hit" when at least this share of them lie within EDGE_FRACTION of
# the range's width (log-scaled for log ranges) from it: a sampler that found its optimum
# inside the range spreads its best trials around it, not against a wall.
BOUNDARY_SHARE = 2 / 3
EDGE_FRACTION = 0.1

# Study-level sentences for a kind found in at least half of the trials.
DOMINANT_ADVICE = {
    "overfit": (
        "most trials overfit: search stronger regularization (dropout, weight_decay, l1, "
        "early stopping) or smaller models, and run the data-size learning curve to see "
        "whether more data would help"
    ),
    "underfit": (
        "most trials underfit: give the model more capacity (hidden_units, hidden_layers), "
        "less regularization, and more epochs"
    ),
    "diverged": "many trials diverged: lower the top of the lr range or add grad_clip",
    "oscillating": "many trials oscillate: lower lr or raise batch_size",
    "still_improving": "many trials were still improving at the end: raise max_epochs",
    "vanishing_gradients": (
        "many trials have vanishing gradients: use He/Xavier init, non-saturating "
        "activations, batch norm or fewer layers"
    ),
    "exploding_gradients": "many trials have exploding gradients: add grad_clip, lower lr",
    "dead_units": "many trials have dead ReLU units: try leaky_relu or elu, or a lower lr",
    "unrepresentative_validation": (
        "the validation split looks unrepresentative in many trials: raise val_fraction"
    ),
    "good_fit": "most trials fit well: refine the search around the best trial's configuration",
    "inconclusive": (
        "most trials are neither a good fit nor clearly over- or underfit: each one's finding "
        "says which side it leans to (variance: stop early, regularize, more data; bias: more "
        "capacity, train longer) and why it is not a good fit"
    ),
}


def importances(
    session: Session, study_id: int, n_complete: int
) -> tuple[dict[str, float], str | None]:
    """Optuna's fANOVA, or sampled PED-ANOVA on large studies: the dashboard's computation
    (cached per number of complete trials), so a 5,000-trial report stays fast."""
    if n_complete < MIN_TRIALS_FOR_IMPORTANCE:
        return {}, (
            f"importances need at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials "
            f"(this study has {n_complete})"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "too few trials": answered by the note
        found = charts.importances(session, study_id)
    result = {k: v for k, v in found.importances.items() if math.isfinite(v)}
    if not result:
        return {}, "importances could not be computed (every searched value was the same?)"
    return dict(sorted(result.items(), key=lambda kv: -kv[1])), None


def _position(value: float, dist: NumericDist) -> float:
    """Where value lies in [low, high], 0..1, on the range's own scale."""
    low, high = float(dist.low), float(dist.high)
    if dist.log and low > 0 and value > 0:
        low, high, value = math.log(low), math.log(high), math.log(value)
    return (value - low) / (high - low) if high > low else 0.5


def _first_value(t: Scored | FrozenTrial) -> float:
    """The objective's value, or a multi-objective study's first one."""
    return float(t.value) if isinstance(t, Scored) else float(t.values[0])


def boundary_hits(
    space: Mapping[str, Distribution], done: Sequence[Scored | FrozenTrial], direction: str
) -> list[BoundaryHit]:
    """Edges of numeric ranges that the best completed trials (`done`, ranked by
    `direction`) pile up against: the optimum may lie beyond them. `done`: all complete
    trials, or an even sample of them (the best quarter of a sample stands for the best
    quarter of the study)."""
    if len(done) < TOP_MIN:
        return []
    # values[0]: the objective, or a multi-objective study's first one
    ranked = sorted(done, key=_first_value, reverse=direction == "maximize")
    top = ranked[: max(TOP_MIN, math.ceil(TOP_FRACTION * len(done)))]
    hits = []
    for param, dist in space.items():
        if not isinstance(dist, FloatDist | IntDist):
            continue
        values = [float(t.params[param]) for t in top if param in t.params]
        if not values:
            continue
        positions = [_position(v, dist) for v in values]
        for edge in ("high", "low"):
            near = sum(
                1
                for p in positions
                if (p >= 1 - EDGE_FRACTION if edge == "high" else p <= EDGE_FRACTION)
            )
            if near / len(values) >= BOUNDARY_SHARE:
                hits.append(_hit(param, dist, edge, near, len(values)))
    return hits


def _hit(param: str, dist: NumericDist, edge: str, near: int, of: int) -> BoundaryHit:
    bound = dist.high if edge == "high" else dist.low
    where = "top" if edge == "high" else "bottom"
    facts = (
        f"{near} of the {of} best trials have {param} within {EDGE_FRACTION:.0%} of the "
        f"{where} of its range ({bound:g})"
    )
    spec = PARAMS.get(param)
    limit = None if spec is None else (spec.high if edge == "high" else spec.low)
    if limit is not None and float(bound) == limit:
        return BoundaryHit(
            param=param,
            edge=edge,
            advice=f"{facts}, which is {param}'s own limit: fix it at {bound:g}",
        )
    wider = widened(dist, edge, param)
    return BoundaryHit(
        param=param,
        edge=edge,
        advice=(
            f"widen {param} {'upward' if edge == 'high' else 'downward'}: {facts}; e.g. "
            f'"{param}": {{"low": {wider["low"]:g}, "high": {wider["high"]:g}}}'
        ),
    )


def _kind_words(finding: Mapping[str, Any]) -> str:
    """A finding's kind, with the side an inconclusive fit leans to."""
    leans = finding.get("evidence", {}).get("leans")
    if finding["kind"] == "inconclusive" and leans in ("variance", "bias"):
        return f"inconclusive (leaning to {leans})"
    return str(finding["kind"])


def _advice(
    n: int,
    counts: Counter[str],
    best: tuple[int, float, str] | None,
    best_findings: list[dict[str, Any]],
    imp: dict[str, float],
    hits: list[BoundaryHit],
) -> str:
    if n == 0:
        return "No finished trials yet: nothing to report."
    parts = [
        f"{n} finished trial{'s' if n != 1 else ''} diagnosed: "
        + (", ".join(f"{c} {k}" for k, c in counts.most_common()) or "no findings")
        + "."
    ]
    if best is not None:
        number, value, metric = best
        kinds = [_kind_words(f) for f in best_findings] or ["no finding"]
        line = f"The best trial (#{number}, {metric} {value:.4g}) shows {', '.join(kinds)}"
        remedies = [r for f in best_findings for r in f["remedies"]]
        parts.append(line + (f"; first remedy: {remedies[0]}." if remedies else "."))
    for kind, c in counts.most_common():
        if c * 2 >= n and kind in DOMINANT_ADVICE:
            text = DOMINANT_ADVICE[kind]
            parts.append(text[0].upper() + text[1:] + ".")
    if imp:
        ranked = list(imp.items())
        line = f"{ranked[0][0]} matters most (importance {ranked[0][1]:.2f})"
        if len(ranked) > 1:
            line += f", then {ranked[1][0]} ({ranked[1][1]:.2f})"
        parts.append(line + ".")
    parts += [h.advice[0].upper() + h.advice[1:] + "." for h in hits]
    return " ".join(parts)


_reports: VersionedCache[StudyReport] = VersionedCache(maxsize=32)
# Finished trials without stored findings diagnosed per report read (workers store them when
# a trial ends; these are trials whose worker was killed, or from before findings existed).
DIAGNOSE_PER_READ = 200


@dataclass
class Scored:
    """A complete trial as `boundary_hits` reads it (a FrozenTrial reads the same)."""

    value: float
    params: dict[str, Any]


def study_report(session: Session, study_id: int) -> StudyReport:
    """The study's report; raises StudyNotFound. Bounded reads, whatever the study's size:
    finding counts are aggregate SQL over the stored findings, importances and boundary hits
    read an even sample of at most ~1,000 complete trials (`studies.samples`), the best
    trial is one indexed query. Kept per study version (`studies.cache`). Up to
    DIAGNOSE_PER_READ finished trials without findings are diagnosed and stored in the
    caller's transaction; a report that left some undiagnosed is not kept."""
    study = get_study_row(session, study_id)
    version = study_version(session, study)
    counts = cached_counts(session, study, version)
    key = (database_url(session), study_id, "report")
    found = _reports.get(key, version)
    if found is not None:
        return found
    report, complete = _report(session, study, counts, version)
    if complete:
        _reports.put(key, version, report)
    return report


def _report(
    session: Session, study: Study, counts: TrialCounts, version: Version
) -> tuple[StudyReport, bool]:
    best = best_trial(session, study, version)
    spec = load_spec(study.spec)
    direction = objectives_of(spec)[0].direction  # a multi-objective study's first
    sample = complete_sample(session, study.optuna_study_id, counts.complete)
    complete = om.TrialModel.state == TrialState.COMPLETE
    h = study_history(session, study, complete if sample is None else sample)
    done = [
        Scored(v, {p: col[i] for p, col in h.params.items() if col[i] is not None})
        for i, v in enumerate(h.value)
        if v is not None
    ]
    n_done = len(done) if sample is None else counts.complete
    imp, note = importances(session, study.id, n_done)
    hits = boundary_hits(spec.space, done, direction)
    # Last: diagnosing trials stores their findings, a write that on SQLite holds the
    # database's lock until the route's commit.
    missing = diagnoses.diagnose_missing(session, study, DIAGNOSE_PER_READ)
    n_diagnosed, by_kind = diagnoses.finding_counts(session, study.id)
    counted: Counter[str] = Counter(by_kind)
    best_findings: list[dict[str, Any]] = []
    if best is not None:
        best_findings = diagnoses.stored(session, [best.trial_id]).get(best.trial_id, [])
    best_fact = None if best is None else (best.number, best.value, spec.objective.metric)
    report = StudyReport(
        study_id=study.id,
        n_trials=n_diagnosed,
        finding_counts=dict(counted.most_common()),
        best_trial_id=None if best is None else best.trial_id,
        best_trial_findings=[Finding.model_validate(f) for f in best_findings],
        importances=imp,
        importances_note=note,
        boundary_hits=hits,
        advice=_advice(n_diagnosed, counted, best_fact, best_findings, imp, hits),
    )
    return report, missing <= DIAGNOSE_PER_READ
