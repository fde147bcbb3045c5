"""The service's own tables. Optuna owns its tables (`studies`, `trials`, ...) in the same
database, so ours carry an `hpo_` prefix."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """Naive UTC: stored and compared identically by SQLite and PostgreSQL."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Study(Base):
    __tablename__ = "hpo_studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True)
    optuna_study_id: Mapped[int] = mapped_column(Integer)
    n_trials: Mapped[int] = mapped_column(Integer)
    # Trials holding a slot of the budget: claimed, running, complete or pruned.
    slots_used: Mapped[int] = mapped_column(Integer, default=0)
    # Monotonic count of claims; seeds each trial's sampler so workers never repeat draws.
    n_claims: Mapped[int] = mapped_column(Integer, default=0)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    # Trials claimed and not yet finished; claims stop at max_parallel_trials (if set).
    n_running: Mapped[int] = mapped_column(Integer, default=0)
    max_parallel_trials: Mapped[int | None] = mapped_column(Integer, default=None)
    # budget.device_hours in seconds (NULL: no limit); claims stop once `device_seconds`
    # (the sum of its finished trials' device seconds) reaches it.
    device_seconds_limit: Mapped[float | None] = mapped_column(Float, default=None)
    device_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow, onupdate=utcnow)
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(), default=None)
    # The API token that submitted it (NULL when auth was off).
    owner_token_id: Mapped[int | None] = mapped_column(
        ForeignKey("hpo_api_tokens.id"), default=None, index=True
    )


class TrialRecord(Base):
    """What the service knows about a trial beyond Optuna: who runs it, why it failed."""

    __tablename__ = "hpo_trials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("hpo_studies.id", ondelete="CASCADE"))
    optuna_trial_id: Mapped[int | None] = mapped_column(Integer, unique=True, default=None)
    number: Mapped[int | None] = mapped_column(Integer, default=None)
    claim_index: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[int | None] = mapped_column(
        ForeignKey("hpo_workers.id", ondelete="SET NULL"), default=None
    )
    enqueued_id: Mapped[int | None] = mapped_column(
        ForeignKey("hpo_enqueued.id", ondelete="SET NULL"), default=None
    )
    # claimed -> running -> complete | pruned | fail
    state: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text, default=None)
    test_accuracy: Mapped[float | None] = mapped_column(Float, default=None)
    # The test split's metrics by name: test_accuracy and test_loss, or for regression
    # test_rmse, test_mae (the target's units), test_r2 and test_loss (trainer.evaluate_test).
    test_metrics: Mapped[dict[str, float] | None] = mapped_column(JSON, default=None)
    # trainer.model.config_warnings(config): e.g. dropout placed before batch norm.
    warnings: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    started_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(), default=None)
    # A re-run with the same parameters of the trial (Optuna trial id) whose worker died.
    retry_of: Mapped[int | None] = mapped_column(Integer, default=None, index=True)
    retry_number: Mapped[int] = mapped_column(Integer, default=0)
    # The batch size the trial was re-run with after running out of GPU memory.
    oom_batch_size: Mapped[int | None] = mapped_column(Integer, default=None)
    # A re-run that resumed from its retry_of's saved state: the epoch of that state (it
    # trained the epochs after it). NULL: trained from epoch 1.
    resumed_from_epoch: Mapped[int | None] = mapped_column(Integer, default=None)
    # Device time the trial used (a fused pack's wall time split evenly among its members).
    device_seconds: Mapped[float | None] = mapped_column(Float, default=None)

    __table_args__ = (Index("ix_hpo_trials_study_state", "study_id", "state"),)


class CurvePoint(Base):
    __tablename__ = "hpo_curve_points"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    trial_id: Mapped[int] = mapped_column(Integer)  # Optuna's trial_id
    step: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)

    # Also the index that serves "all curves of one trial".
    __table_args__ = (
        UniqueConstraint(
            "trial_id", "metric", "step", name="uq_hpo_curve_points_trial_metric_step"
        ),
    )


class Worker(Base):
    __tablename__ = "hpo_workers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(64))
    gpu_name: Mapped[str | None] = mapped_column(String(255), default=None)
    gpu_memory_mb: Mapped[int | None] = mapped_column(Integer, default=None)
    version: Mapped[str] = mapped_column(String(32))
    # running | stopped | dead
    status: Mapped[str] = mapped_column(String(16), index=True)
    current_trial_id: Mapped[int | None] = mapped_column(Integer, default=None)
    started_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
    # Which incarnation of `pid` this is (`scheduling.workers.process_start`: start ticks,
    # boot and pid namespace), and the same for the supervisor that started it (NULL: none),
    # so a restarted supervisor can stop the workers its dead predecessor left without ever
    # signalling a recycled pid.
    process_start: Mapped[str | None] = mapped_column(String(128), default=None)
    supervisor_pid: Mapped[int | None] = mapped_column(Integer, default=None)
    supervisor_start: Mapped[str | None] = mapped_column(String(128), default=None)
    # What the last heartbeat saw of the device (NULL on CPU, or where it cannot be read):
    # memory in use on it (MiB) and, with NVML, its utilization (percent).
    gpu_memory_used_mb: Mapped[int | None] = mapped_column(Integer, default=None)
    gpu_utilization: Mapped[float | None] = mapped_column(Float, default=None)


class EnqueuedConfig(Base):
    """A (partial) configuration to try before the sampler takes over; run exactly once."""

    __tablename__ = "hpo_enqueued"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("hpo_studies.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Set, once, by the claim that runs it.
    claimed: Mapped[bool] = mapped_column(default=False)
    # Set on the re-run of a trial whose worker died (its Optuna trial id).
    retry_of: Mapped[int | None] = mapped_column(Integer, default=None)
    retry_number: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (Index("ix_hpo_enqueued_study", "study_id", "claimed", "position"),)


# `hpo_artifacts.kind` of a running trial's saved training state (trainer.state), which a
# re-run of the trial resumes from; deleted when the trial ends without a re-run.
CHECKPOINT_KIND = "checkpoint"


class Artifact(Base):
    """A file a trial produced, stored in the database so that any worker or API process
    can read it knowing only the database URL. kind "model": a torch.save checkpoint
    (trainer.checkpoint); kind `CHECKPOINT_KIND`: a running trial's training state."""

    __tablename__ = "hpo_artifacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(Integer)  # Optuna's trial_id
    kind: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    # What a reader needs without loading the bytes (e.g. family, n_blocks for init_from).
    meta: Mapped[dict[str, Any]] = mapped_column(JSON)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)

    __table_args__ = (UniqueConstraint("trial_id", "kind", name="uq_hpo_artifacts_trial_kind"),)


class TrialDiagnosis(Base):
    """A finished trial's findings (trainer.diagnosis), computed once when it ends."""

    __tablename__ = "hpo_trial_diagnoses"

    trial_id: Mapped[int] = mapped_column(Integer, primary_key=True)  # Optuna's trial_id
    study_id: Mapped[int] = mapped_column(
        ForeignKey("hpo_studies.id", ondelete="CASCADE"), index=True
    )
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    computed_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)


class FindingKind(Base):
    """How many findings of one kind a trial's diagnosis holds: written with the findings,
    so a study's finding counts are one GROUP BY (`analysis.report`), not a read of every
    trial's findings. Deleted with the diagnosis (foreign key, cascade)."""

    __tablename__ = "hpo_trial_finding_kinds"

    trial_id: Mapped[int] = mapped_column(
        ForeignKey("hpo_trial_diagnoses.trial_id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("hpo_studies.id", ondelete="CASCADE"))
    n: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_hpo_trial_finding_kinds_study_kind", "study_id", "kind"),)


class LearningCurveJob(Base):
    """Train a study's best configuration on growing fractions of its training split."""

    __tablename__ = "hpo_learning_curves"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(
        ForeignKey("hpo_studies.id", ondelete="CASCADE"), index=True
    )
    source_trial_id: Mapped[int] = mapped_column(Integer)  # the best trial (Optuna id)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    fractions: Mapped[list[float]] = mapped_column(JSON)
    # queued -> running -> complete | fail; running -> queued when its worker died
    state: Mapped[str] = mapped_column(String(16), index=True)
    worker_id: Mapped[int | None] = mapped_column(
        ForeignKey("hpo_workers.id", ondelete="SET NULL"), default=None
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    points: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(), default=None)


class ApiToken(Base):
    """A bearer token; only its sha256 is stored. Revoked tokens stay, as owners of records."""

    __tablename__ = "hpo_api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    # read | submit | admin
    role: Mapped[str] = mapped_column(String(16))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(), default=None)


class DatasetBlob(Base):
    """An uploaded dataset's arrays as a canonical NPZ, stored once per content hash."""

    __tablename__ = "hpo_dataset_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)


class Dataset(Base):
    """A named uploaded dataset; several names may share one blob."""

    __tablename__ = "hpo_datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    sha256: Mapped[str] = mapped_column(ForeignKey("hpo_dataset_blobs.sha256"), index=True)
    source_format: Mapped[str] = mapped_column(String(16))  # npz | csv | parquet
    n_rows: Mapped[int] = mapped_column(Integer)
    shape: Mapped[list[int]] = mapped_column(JSON)  # X's shape, rows first
    n_classes: Mapped[int] = mapped_column(Integer)
    classes: Mapped[list[str]] = mapped_column(JSON)  # original label of class index i
    # classification | regression (then y is the float target and `classes` is empty)
    task: Mapped[str] = mapped_column(String(16), default="classification")
    owner_token_id: Mapped[int | None] = mapped_column(
        ForeignKey("hpo_api_tokens.id"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=utcnow)
