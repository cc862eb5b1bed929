"""One home for every setting: read from the environment, documented in the README.

Every field is read from ``CJA_AUDIENCES_<FIELD>`` unless it names another variable
(``validation_alias``). Credentials never live here; they come from Airflow connections
(see ``adobe.auth``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENV_PREFIX = "CJA_AUDIENCES_"


def _home(value: Any) -> Any:
    """A local folder becomes a Path; a URL (s3://, gs://, abfs://) stays text for the lake."""
    text = str(value)
    return text if "://" in text and not text.startswith("file://") else Path(text).expanduser()


def _json_object(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


class Settings(BaseSettings):
    """Runtime settings. Build with :func:`get_settings` (environment) or directly in tests."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, populate_by_name=True, frozen=True
    )

    home: Annotated[Path | str, BeforeValidator(_home)] = Field(
        Path.home() / "cja_audiences",
        description="root of landing/, lake/, audiences/: a folder or a URL (s3://, gs://, abfs://)",
    )
    audiences_dir: Path = Field(
        PROJECT_ROOT / "include" / "audiences",
        validation_alias="CJA_AUDIENCES_SPECS",
        description="folder of audience YAML files",
    )
    filters_dir: Path = Field(
        PROJECT_ROOT / "include" / "filters",
        validation_alias="CJA_AUDIENCES_FILTERS",
        description="folder of Jinja filter templates",
    )
    aep_conn_id: str = "aep_default"
    cja_conn_id: str = "cja_default"
    max_refreshing_audiences: int = Field(
        150, ge=1, le=150, validation_alias="CJA_AUDIENCES_MAX_REFRESHING"
    )
    max_bad_row_share: float = Field(0.01, ge=0, le=1)
    run_retention: int = Field(30, ge=1)
    landing_poll_s: float = Field(30.0, gt=0, description="how often the landing watcher looks")
    catalog_dataset_id: str | None = Field(
        None,
        validation_alias="CJA_AUDIENCES_CATALOG_DATASET",
        description="AEP dataset behind CJA: its new batches start an extract",
    )
    catalog_poll_s: float = Field(60.0, gt=0)
    lease_ttl_s: float = Field(
        1800.0, gt=0, description="how long an audience's writer lease lasts unless renewed"
    )
    lease_wait_s: float = Field(
        300.0, ge=0, description="how long a run waits for another run of its audience"
    )
    compute_memory_limit: str = Field(
        "2GB", description="DuckDB memory_limit of one audience computation"
    )
    compute_threads: int = Field(2, ge=1, le=64, description="DuckDB threads of one computation")
    session_timeout_minutes: int = Field(
        30, ge=1, description="the data view's session timeout: a new session after this idle time"
    )
    session_start_event_types: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="event types that always start a new session (CJA: start a new session "
        "with a metric); comma-separated in the environment",
    )

    @field_validator("session_start_event_types", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    rate_budget_url: str = Field(
        "",
        description="where the per-org records/s budget lives across processes: redis://… "
        "(Celery deployments), postgresql://… or sqlite:///… (a table), airflow (Airflow's "
        "metadata DB: deployments without Redis); empty = one budget per process",
    )
    storage_options: Annotated[dict[str, Any], BeforeValidator(_json_object)] = Field(
        default_factory=dict,
        description="fsspec options (JSON) for an object-storage home, e.g. endpoint_url; "
        "credentials come from the provider's own chain (AWS_* variables, instance roles)",
    )
    membership_ttl_days: float = Field(
        30.0, gt=1, le=420, description="validUntil of a sent membership: days after sending"
    )
    renewal_margin_hours: float = Field(
        48.0, ge=0, description="renew when validUntil falls before the next refresh + this"
    )
    renewal_spread_days: float = Field(
        21.0, ge=0, description="a new member's validUntil is moved earlier by up to this"
    )
    reconcile_sample: int = Field(
        1000, ge=1, description="members (and as many recent exits) read back per reconcile"
    )

    @field_validator("audiences_dir", "filters_dir", mode="after")
    @classmethod
    def _expand_user(cls, value: Path) -> Path:
        return value.expanduser()


def env_name(field: str) -> str:
    """The environment variable a setting is read from."""
    alias = Settings.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else f"{ENV_PREFIX}{field.upper()}"


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``environ`` alone (default: the process environment)."""
    if environ is None:
        return Settings()
    values = {
        field: environ[env_name(field)]
        for field in Settings.model_fields
        if environ.get(env_name(field))
    }
    return Settings.model_validate(values)


@cache
def get_settings() -> Settings:
    """Process-wide settings from the environment (cached: the environment is read once)."""
    return settings_from_env()
