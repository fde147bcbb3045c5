"""Settings from the environment (HPO_ prefix); CLI flags override them."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./hpo-data/hpo.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HPO_", extra="ignore")

    database_url: str = Field(
        "", description=f"SQLAlchemy URL; default {DEFAULT_DATABASE_URL} (in data_dir)"
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(2, ge=0, le=256, description="local worker processes under `hpo serve`")
    data_dir: Path = Path("./hpo-data")
    device: str | None = Field(None, description="cpu, cuda or cuda:N; default: cuda if present")
    max_trials: int = Field(1000, ge=1, description="cap on a study's budget.n_trials")
    max_epochs: int = Field(1000, ge=1, description="cap on objective.max_epochs")
    worker_poll_seconds: float = Field(1.0, gt=0)
    heartbeat_seconds: float = Field(5.0, gt=0)
    worker_grace_seconds: float = Field(60.0, gt=0, description="heartbeat age of a dead worker")
    stop_deadline_seconds: float = Field(
        30.0, ge=0, description="after SIGTERM, how long a worker's trial may still run"
    )
    torch_threads: int | None = Field(None, ge=1, description="intra-op threads per worker")
    log_level: str = "info"
    log_format: Literal["text", "json"] = Field(
        "text", description="log lines of serve and workers: text, or one JSON object each"
    )
    log_polling_requests: bool = Field(
        False,
        description="access-log the dashboard's and monitors' polling (GET of studies, "
        "trials, workers, health, metrics); off: only the other requests and errors",
    )
    # -- access (issue 7) -----------------------------------------------------------------
    auth: Literal["auto", "required", "off"] = Field(
        "auto", description="auto: required unless the service listens on a loopback address"
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="origins allowed by CORS (JSON list); none: CORS off"
    )
    max_request_bytes: int = Field(
        64 * 2**20, ge=1024, description="request bodies larger than this get 413"
    )
    submit_per_minute: float = Field(
        30.0, gt=0, description="study and dataset submissions per token (or client) per minute"
    )
    submit_burst: int = Field(10, ge=1, description="submissions allowed back to back")
    bootstrap_token_file: Path | None = Field(
        None,
        description="a file holding an admin token (hpo_ + 43 characters) that `hpo serve` "
        "stores at startup if no token has its hash (compose: a Docker secret)",
    )
    max_running_studies_per_owner: int = Field(
        20, ge=1, description="running studies one token may own at a time"
    )
    # -- uploaded datasets ------------------------------------------------------------------
    max_dataset_rows: int = Field(1_000_000, ge=4)
    max_dataset_features: int = Field(
        1_000_000, ge=1, description="values per row (product of X.shape[1:])"
    )
    max_dataset_classes: int = Field(1000, ge=2)
    max_dataset_bytes: int = Field(
        1 * 2**30, ge=1024, description="uncompressed size of the arrays (and of NPZ members)"
    )
    root_path: str = Field(
        "", description="path prefix a reverse proxy serves the app under (and strips), e.g. /hpo"
    )
    # -- metrics (issue 17) -------------------------------------------------------------
    metrics_study_names: bool = Field(
        False, description="label /metrics series with study names too (default: ids only)"
    )
    metrics_max_studies: int = Field(
        20,
        ge=0,
        le=1000,
        description="studies with their own /metrics series (running first, then the most "
        'recently created); the rest are summed into study="other"',
    )
    metrics_bind: str | None = Field(
        None,
        description="host:port of a separate, token-free /metrics listener (e.g. "
        "127.0.0.1:9464 or [::1]:9464); /metrics on the API keeps needing a token",
    )

    @field_validator("metrics_bind")
    @classmethod
    def _host_and_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, _, port = value.rpartition(":")
        if not host.strip("[]") or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"expected host:port, e.g. 127.0.0.1:9464, got {value!r}")
        return value

    # -- where dataset files may be (issue 17) ----------------------------------------------
    data_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="folders besides data_dir that dataset.path may point into: a JSON list, "
        "or paths separated by os.pathsep (':' on Linux)",
    )
    allow_downloads: bool = Field(
        True, description="whether dataset.download may fetch image datasets into a data root"
    )
    max_dataset_compression_ratio: float = Field(
        100.0,
        ge=1,
        description="an NPZ or Parquet upload may inflate to at most this many times its "
        "compressed size (once past max_request_bytes)",
    )

    @field_validator("data_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part for part in text.split(os.pathsep) if part.strip()]
        return value

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir.as_posix()}/hpo.db"
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
