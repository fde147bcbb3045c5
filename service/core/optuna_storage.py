"""Optuna's RDB storage on the service's database: the coordination engine."""

from __future__ import annotations

from functools import lru_cache

import optuna

from service.core.db.engine import engine_kwargs, ensure_sqlite_dir


@lru_cache(maxsize=8)
def get_storage(url: str) -> optuna.storages.RDBStorage:
    ensure_sqlite_dir(url)
    # skip_compatibility_check: `hpo db upgrade` owns schema upgrades, and the API must still
    # start (and say why) on an old schema instead of crashing at import.
    return optuna.storages.RDBStorage(
        url, engine_kwargs=engine_kwargs(url), skip_compatibility_check=True
    )
