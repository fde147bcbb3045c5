"""Write N finished trials straight into Optuna's tables, in a few executemany statements.

Used by `bench/coordination_scale.py` and `tests/test_pruning_scale.py` to make studies of
1,000 to 100,000 trials in seconds (Optuna's `add_trials` costs several statements per
trial). The trials are what a worker would have left: parameters drawn from the study's
distributions, one intermediate value per epoch, COMPLETE with the last value (a share
PRUNED part-way), and none of our `hpo_trials` records (the study's budget is untouched).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import optuna
from sqlalchemy import func, insert, select

from service.core.db.engine import get_engine
from service.core.optuna_compat import rdb_models

BATCH = 5_000  # trials per round of inserts


def fill(
    url: str,
    study_id: int,
    n: int,
    distributions: Mapping[str, optuna.distributions.BaseDistribution],
    *,
    epochs: int = 10,
    pruned_share: float = 0.3,
    values: tuple[float, float] = (0.0, 0.5),
    seed: int = 0,
) -> None:
    """Append `n` finished trials to Optuna study `study_id` in `url`. Each reports `epochs`
    intermediate values drawn from `values` (steps 0..epochs-1); a `pruned_share` of them
    stops early as PRUNED (no value), the rest are COMPLETE with their last value."""
    rng = random.Random(seed)
    T = rdb_models.TrialModel
    P = rdb_models.TrialParamModel
    V = rdb_models.TrialValueModel
    IV = rdb_models.TrialIntermediateValueModel
    dist_json = {k: optuna.distributions.distribution_to_json(d) for k, d in distributions.items()}
    engine = get_engine(url)
    with engine.begin() as conn:
        start = conn.scalar(select(func.max(T.number)).where(T.study_id == study_id))
    number = 0 if start is None else start + 1
    t0 = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=1)
    done = 0
    while done < n:
        k = min(BATCH, n - done)
        plans = []
        for _i in range(k):
            pruned = rng.random() < pruned_share
            steps = rng.randint(1, epochs - 1) if pruned and epochs > 1 else epochs
            curve = [rng.uniform(*values) for _ in range(steps)]
            plans.append((pruned, curve))
        trial_rows = [
            {
                "number": number + done + i,
                "study_id": study_id,
                "state": (
                    optuna.trial.TrialState.PRUNED if p else optuna.trial.TrialState.COMPLETE
                ),
                "datetime_start": t0,
                "datetime_complete": t0 + timedelta(seconds=1),
            }
            for i, (p, _) in enumerate(plans)
        ]
        with engine.begin() as conn:
            ids = conn.scalars(
                insert(T).returning(T.trial_id, sort_by_parameter_order=True), trial_rows
            ).all()
            params, values_rows, inter = [], [], []
            for trial_id, (pruned, curve) in zip(ids, plans, strict=True):
                for name, dist in distributions.items():
                    value = _draw(rng, dist)
                    params.append(
                        {
                            "trial_id": trial_id,
                            "param_name": name,
                            "param_value": dist.to_internal_repr(value),
                            "distribution_json": dist_json[name],
                        }
                    )
                if not pruned:
                    values_rows.append(
                        {
                            "trial_id": trial_id,
                            "objective": 0,
                            "value": curve[-1],
                            "value_type": V.TrialValueType.FINITE,
                        }
                    )
                inter.extend(
                    {
                        "trial_id": trial_id,
                        "step": step,
                        "intermediate_value": v,
                        "intermediate_value_type": IV.TrialIntermediateValueType.FINITE,
                    }
                    for step, v in enumerate(curve)
                )
            if params:
                conn.execute(insert(P), params)
            if values_rows:
                conn.execute(insert(V), values_rows)
            conn.execute(insert(IV), inter)
        done += k


def _draw(rng: random.Random, dist: optuna.distributions.BaseDistribution) -> object:
    if isinstance(dist, optuna.distributions.FloatDistribution):
        return rng.uniform(dist.low, dist.high)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return rng.randint(dist.low, dist.high)
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return rng.choice(dist.choices)
    raise TypeError(f"unsupported distribution {dist!r}")
