"""Samplers and pruners from the spec. Everything here is Optuna's own implementation."""

from __future__ import annotations

import optuna

from service.studies.fusing import fused
from service.studies.search.space import grid_values
from service.studies.spec import PrunerSpec, StudySpec

# Distinct seeds per claim: every worker process builds a fresh sampler per trial, and the
# same seed in each would make them all draw the same "random" startup configurations.
# Folded into numpy's seed range (0..2**32-1): any spec seed above 4294 would overflow it.
SEED_STRIDE = 1_000_003
SEED_RANGE = 2**32


def build_sampler(spec: StudySpec, claim_index: int) -> optuna.samplers.BaseSampler:
    s = spec.sampler
    seed = None if s.seed is None else (s.seed * SEED_STRIDE + claim_index) % SEED_RANGE
    n_startup = 10 if s.n_startup_trials is None else s.n_startup_trials  # Optuna's default
    # CMA-ES, GP and QMC search the parameters every trial has; conditional ones are drawn by
    # their independent (random) sampler, which they would otherwise log for every trial.
    warn = not any(dist.when for dist in spec.space.values())
    if s.name == "tpe":
        # A fused study's packs ask K trials at once: constant_liar makes each ask see the
        # running ones (with a pessimistic value), so K asks do not collapse onto one point.
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=n_startup, constant_liar=fused(spec.fuse.max_trials)
        )
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.name == "grid":
        return optuna.samplers.GridSampler(grid_values(spec), seed=seed)
    if s.name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=warn)
    if s.name == "gp":
        return optuna.samplers.GPSampler(
            seed=seed, n_startup_trials=n_startup, warn_independent_sampling=warn
        )
    if s.name in ("nsga2", "nsga3"):
        # Generations are read back from the storage's trials, so a fresh sampler per claim
        # (as every worker builds) continues the same evolution.
        nsga = (
            optuna.samplers.NSGAIISampler if s.name == "nsga2" else optuna.samplers.NSGAIIISampler
        )
        return nsga(seed=seed, population_size=s.population_size or 50)  # Optuna's default
    if s.name == "qmc":
        # QMC walks one low-discrepancy sequence by trial number: every worker must use the
        # same scramble seed, so this one is not varied per claim.
        return optuna.samplers.QMCSampler(
            seed=s.seed if s.seed is not None else 0, warn_independent_sampling=warn
        )
    raise ValueError(f"unknown sampler {s.name!r}")


def build_pruner(p: PrunerSpec, max_epochs: int) -> optuna.pruners.BasePruner:
    if p.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps
        )
    if p.name == "percentile":
        return optuna.pruners.PercentilePruner(
            p.percentile, n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps
        )
    if p.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=p.min_resource, reduction_factor=p.reduction_factor
        )
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource,
            max_resource=max_epochs,
            reduction_factor=p.reduction_factor,
        )
    if p.name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {p.name!r}")
