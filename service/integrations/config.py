"""Settings of the integrations, from the environment (HPO_ prefix), read where they are used
(the worker's trial runner and the dispatcher thread) so that nothing else carries them."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class IntegrationSettings(BaseSettings):
    """`HPO_MLFLOW_TRACKING_URI` turns the MLflow export on; `HPO_WEBHOOK_SECRET` signs
    webhook bodies (HMAC-SHA256); failed sends are retried after `webhook_backoff_seconds`,
    doubling each time, up to `webhook_max_attempts` sends in all."""

    model_config = SettingsConfigDict(env_prefix="HPO_", extra="ignore")

    mlflow_tracking_uri: str | None = Field(
        None, description="export finished trials as MLflow runs to this tracking URI"
    )
    webhook_secret: SecretStr | None = Field(
        None, description="key of the X-HPO-Signature HMAC-SHA256 of each webhook body"
    )
    webhook_timeout_seconds: float = Field(10.0, gt=0, description="per webhook request")
    webhook_backoff_seconds: float = Field(
        2.0, gt=0, description="wait before the first retry of a failed send; doubles each time"
    )
    webhook_max_backoff_seconds: float = Field(3600.0, gt=0)
    webhook_max_attempts: int = Field(10, ge=1, le=100, description="sends before giving up")
    outbox_poll_seconds: float = Field(1.0, gt=0, description="how often the outbox is drained")
    outbox_flush_seconds: float = Field(
        5.0, ge=0, description="how long a stopping worker keeps sending what falls due"
    )
