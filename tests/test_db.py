"""Migrations: `hpo db upgrade` creates ours and Optuna's tables, idempotently, on both
backends, and our migration downgrades cleanly; the test fixtures' databases."""

from __future__ import annotations

import subprocess
import sys

import httpx
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, func, inspect, select, text

from service.core.db.migrate import alembic_config, upgrade
from service.core.db.models import LearningCurveJob, Study, Worker

OURS = {
    "hpo_studies",
    "hpo_trials",
    "hpo_curve_points",
    "hpo_workers",
    "hpo_enqueued",
    "hpo_artifacts",
}
OURS |= {"hpo_trial_diagnoses", "hpo_learning_curves"}
OPTUNAS = {"studies", "trials", "trial_params", "trial_values", "version_info"}


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_each_module_starts_on_a_migrated_database_of_its_own(database_url: str) -> None:
    """What earlier modules left (studies with budget, queued learning-curve jobs, workers)
    is not here for this module's in-process workers to run (tests/conftest.py)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            ours = conn.execute(text("SELECT version_num FROM hpo_alembic_version")).scalar()
            for model in (Study, LearningCurveJob, Worker):
                assert conn.execute(select(func.count()).select_from(model)).scalar() == 0
    finally:
        engine.dispose()
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    assert ours == head
    assert tables(database_url) >= OURS | OPTUNAS


def test_cli_db_upgrade_creates_both_schemas_and_is_idempotent(empty_database_url: str) -> None:
    for said in ("created the tables", "up to date"):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "service.cli.main",
                "db",
                "upgrade",
                "--database-url",
                empty_database_url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert said in out.stdout
    names = tables(empty_database_url)
    assert names >= OURS | OPTUNAS | {"hpo_alembic_version", "alembic_version"}
    engine = create_engine(empty_database_url)
    with engine.connect() as conn:
        ours = conn.execute(text("SELECT version_num FROM hpo_alembic_version")).scalar()
    engine.dispose()
    head = ScriptDirectory.from_config(alembic_config(empty_database_url)).get_current_head()
    assert ours == head


def test_our_migration_downgrades_and_upgrades_again(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    command.downgrade(alembic_config(empty_database_url), "base")
    names = tables(empty_database_url)
    assert not (names & OURS)
    assert names >= OPTUNAS  # Optuna's tables are not ours to drop
    upgrade(empty_database_url)
    assert tables(empty_database_url) >= OURS


def test_openapi_documents_the_routes(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    for path in (
        "/api/studies",
        "/api/studies/{study_id}",
        "/api/studies/{study_id}/trials",
        "/api/studies/{study_id}/best",
        "/api/studies/{study_id}/stop",
        "/api/trials/{trial_id}",
        "/api/health",
    ):
        assert path in spec["paths"], path
    assert client.get("/docs").status_code == 200


def test_upgrading_to_0007_forgets_findings_of_the_old_fit_rules(empty_database_url: str) -> None:
    """Stored findings are recomputed on read; rows of the old rules must not survive."""
    upgrade(empty_database_url)
    cfg = alembic_config(empty_database_url)
    command.downgrade(cfg, "0006")
    engine = create_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO hpo_studies (id, name, spec, status, optuna_study_id, n_trials, "
                    "slots_used, n_claims, n_failed, priority, n_running, created_at, "
                    "updated_at) VALUES (1, 's', '{}', 'completed', 1, 1, 1, 1, 0, 0, 0, "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO hpo_trial_diagnoses (trial_id, study_id, findings, computed_at) "
                    """VALUES (7, 1, '[{"kind": "good_fit"}]', CURRENT_TIMESTAMP)"""
                )
            )
        command.upgrade(cfg, "0007")
        with engine.connect() as conn:
            left = conn.execute(text("SELECT count(*) FROM hpo_trial_diagnoses")).scalar()
        assert left == 0
    finally:
        engine.dispose()
