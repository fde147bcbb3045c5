"""Optuna glue: spec -> suggest calls, sampler and pruner factories."""
