"""The audiences dashboard mounted in Airflow's API server (see :mod:`.app`)."""

from cja_audiences.airflow.web.app import create_app

__all__ = ["create_app"]
