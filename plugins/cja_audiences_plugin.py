"""The Airflow plugin: the audiences view in the UI's navigation, served by the API server."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from cja_audiences.airflow.web import create_app


class CJAAudiencesPlugin(AirflowPlugin):
    name = "cja_audiences"
    fastapi_apps = [{"app": create_app(), "url_prefix": "/cja-audiences", "name": "CJA audiences"}]
    external_views = [
        {
            "name": "Audiences",
            "href": "/cja-audiences/",
            "destination": "nav",
            "category": "browse",
            "url_route": "cja-audiences",
        }
    ]
