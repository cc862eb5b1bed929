"""The audiences view the plugin mounts in the Airflow API server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from cja_audiences.airflow.web import create_app
from cja_audiences.extract.synthetic import generate_synthetic
from cja_audiences.lake.layout import Lake

pytestmark = pytest.mark.integration


@pytest.fixture
def client(tmp_path, monkeypatch) -> TestClient:
    lake = Lake(tmp_path / "home")
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    generate_synthetic(lake, persons=200, days=3, end=yesterday, seed=5)
    monkeypatch.setenv("CJA_AUDIENCES_HOME", str(lake.root))
    return TestClient(create_app())


def test_overview_lists_every_audience_with_links(client):
    page = client.get("/")
    assert page.status_code == 200
    assert "Cart abandoners" in page.text
    assert 'href="/dags/cja_audience__cart_abandoners"' in page.text
    assert 'href="audiences/cart_abandoners/sql"' in page.text


def test_rendered_sql_shows_the_query_and_its_bound_parameters(client):
    response = client.get("/audiences/cart_abandoners/sql")
    assert response.status_code == 200
    assert "bound parameters" in response.text
    assert "commerce.productListAdds" in response.text  # a value, shown as a parameter
    assert "SELECT" in response.text.upper()


def test_runs_of_an_audience_never_published_is_empty(client):
    assert client.get("/audiences/cart_abandoners/runs").json() == []


def test_unknown_audience_is_404(client):
    assert client.get("/audiences/nope/sql").status_code == 404
