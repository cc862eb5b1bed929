"""One home for every setting: read from the environment, documented in the README.

Credentials never live here; they come from Airflow connections (see ``adobe.auth``).
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from pydantic import BaseModel, Field

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseModel):
    """Runtime settings. Build with :func:`get_settings` (environment) or directly in tests."""

    home: Path = Field(description="CJA_AUDIENCES_HOME: root of landing/, lake/, audiences/")
    audiences_dir: Path = Field(description="CJA_AUDIENCES_SPECS: folder of audience YAML files")
    filters_dir: Path = Field(description="CJA_AUDIENCES_FILTERS: folder of Jinja filter templates")
    aep_conn_id: str = "aep_default"
    cja_conn_id: str = "cja_default"
    max_refreshing_audiences: int = Field(150, ge=1, le=150)
    max_bad_row_share: float = Field(0.01, ge=0, le=1)
    run_retention: int = Field(30, ge=1)
    landing_poll_s: float = Field(30.0, gt=0, description="how often the landing watcher looks")
    catalog_dataset_id: str | None = Field(
        None, description="AEP dataset behind CJA: its new batches start an extract"
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


def settings_from_env(environ: dict[str, str] | None = None) -> Settings:
    """Settings from ``environ`` (default: the process environment)."""
    env = os.environ if environ is None else environ

    def path(name: str, default: Path) -> Path:
        value = env.get(name)
        return Path(value).expanduser() if value else default

    values: dict[str, object] = {
        "home": path("CJA_AUDIENCES_HOME", Path.home() / "cja_audiences"),
        "audiences_dir": path("CJA_AUDIENCES_SPECS", PROJECT_ROOT / "include" / "audiences"),
        "filters_dir": path("CJA_AUDIENCES_FILTERS", PROJECT_ROOT / "include" / "filters"),
    }
    optional = {
        "CJA_AUDIENCES_AEP_CONN_ID": "aep_conn_id",
        "CJA_AUDIENCES_CJA_CONN_ID": "cja_conn_id",
        "CJA_AUDIENCES_MAX_REFRESHING": "max_refreshing_audiences",
        "CJA_AUDIENCES_MAX_BAD_ROW_SHARE": "max_bad_row_share",
        "CJA_AUDIENCES_RUN_RETENTION": "run_retention",
        "CJA_AUDIENCES_LANDING_POLL_S": "landing_poll_s",
        "CJA_AUDIENCES_CATALOG_DATASET": "catalog_dataset_id",
        "CJA_AUDIENCES_CATALOG_POLL_S": "catalog_poll_s",
        "CJA_AUDIENCES_LEASE_TTL_S": "lease_ttl_s",
        "CJA_AUDIENCES_LEASE_WAIT_S": "lease_wait_s",
        "CJA_AUDIENCES_COMPUTE_MEMORY_LIMIT": "compute_memory_limit",
        "CJA_AUDIENCES_COMPUTE_THREADS": "compute_threads",
    }
    for env_name, field in optional.items():
        if env.get(env_name):
            values[field] = env[env_name]
    return Settings(**values)


@cache
def get_settings() -> Settings:
    """Process-wide settings from the environment (cached: the environment is read once)."""
    return settings_from_env()
