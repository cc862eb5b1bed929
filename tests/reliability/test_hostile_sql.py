"""Filter SQL from audience authors stays inside its inputs: templates, computed fields,
rule and segment values, field names. Each attempt is refused with an error naming the spec
(or stays a plain value) and nothing is read or written outside the query's own inputs."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from cja_audiences.compute import AudienceError, evaluate_audience, render_audience
from cja_audiences.filters.fields import FieldError, event_field
from cja_audiences.lake.layout import write_parquet
from cja_audiences.settings import Settings
from cja_audiences.specs.model import AudienceSpec
from tests.compute.helpers import ADD, BUY, T0, ev, write_lake
from tests.publish.helpers import member_table

pytestmark = pytest.mark.reliability
AS_OF = (T0 + timedelta(days=1)).date()
ROWS = [ev("p1", 0, ADD), ev("p1", 1, BUY, revenue=40.0), ev("p2", 2, ADD)]
PERSONS = {"p1": {}, "p2": {}}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    write_lake(tmp_path / "home", ROWS, PERSONS)
    # another audience's members live in the same lake: a template must not reach them
    write_parquet(member_table(range(3)), tmp_path / "home/audiences/other/runs/r1/members.parquet")
    (tmp_path / "secret.csv").write_text("token,value\nsecret,s3cr3t-v4lue\n")
    (tmp_path / "filters").mkdir()
    return Settings(
        home=tmp_path / "home", audiences_dir=tmp_path, filters_dir=tmp_path / "filters"
    )


def template_spec(settings: Settings, body: str, **fields) -> AudienceSpec:
    (settings.filters_dir / "t.sql.j2").write_text(body)
    raw = {
        "id": "hostile",
        "name": "Hostile",
        "refresh": {"frequency": "daily", "lookback_days": 3},
        "filter": {"template": "t.sql.j2"},
        **fields,
    }
    return AudienceSpec.model_validate(raw)


OUTSIDE = [
    "SELECT content AS person_id FROM read_text('/etc/hostname')",
    "SELECT token AS person_id FROM read_csv('{tmp}/secret.csv')",
    "SELECT person_id FROM read_parquet('{home}/audiences/other/runs/r1/members.parquet')",
    "SELECT person_id FROM '{tmp}/secret.csv'",
    "SELECT person_id FROM glob('/*') AS g(person_id)",
    "SELECT person_id FROM {{{{ events }}}}; COPY raw_persons TO '{tmp}/leak.csv'",
    "SELECT person_id FROM {{{{ events }}}}; ATTACH '{tmp}/x.duckdb'",
    "SELECT person_id FROM {{{{ events }}}}; INSTALL httpfs",
    "SELECT person_id FROM {{{{ events }}}}; SET enable_external_access = true",
    "SELECT person_id FROM {{{{ events }}}}; CREATE SECRET (TYPE s3, KEY_ID 'a', SECRET 'b')",
]


@pytest.mark.parametrize("body", OUTSIDE)
def test_templates_cannot_reach_outside_their_inputs(settings, tmp_path, body):
    sql = body.format(tmp=tmp_path, home=settings.home)
    spec = template_spec(settings, sql)
    with pytest.raises(AudienceError, match="hostile: filter") as error:
        evaluate_audience(spec, settings=settings, as_of=AS_OF, preview=False)
    assert "s3cr3t" not in str(error.value)
    assert not (tmp_path / "leak.csv").exists() and not (tmp_path / "x.duckdb").exists()


def test_templates_stay_expressive_sql_over_the_relations(settings):
    body = (
        "WITH buys AS (SELECT person_id, sum(revenue) OVER (PARTITION BY person_id) AS r\n"
        "  FROM {{ events }} WHERE event_type = 'commerce.purchases')\n"
        "SELECT DISTINCT person_id FROM buys WHERE r > 10\n"
        "UNION SELECT person_id FROM (PIVOT {{ events }} ON event_type IN ('commerce.purchases') USING count(*))\n"
        "  WHERE person_id = 'p2'"
    )
    result = evaluate_audience(template_spec(settings, body), settings=settings, as_of=AS_OF)
    assert result.members.column("person_id").to_pylist() == ["p1", "p2"]


@pytest.mark.parametrize(
    "expr",
    [
        "(VALUES (1))",
        "(WITH x AS (SELECT 1) TABLE x)",
        "(PIVOT ev ON event_type USING count(*))",
        "(SUMMARIZE ev)",
        "(TABLE 'secret.csv')",
        "EXISTS (FROM ev)",
        "revenue) FROM ev UNION ALL (SELECT 1",
        "revenue; COPY ev TO 'x.csv'",
        "revenue /* hidden */",
    ],
)
def test_computed_fields_are_single_expressions(settings, expr):
    """Refused when the spec loads (a screen) or, at the latest, when it compiles."""
    raw = {
        "id": "hostile",
        "name": "Hostile",
        "refresh": {"frequency": "daily", "lookback_days": 3},
        "filter": {"rules": {"event": {"field": "x", "op": "gt", "value": 0}}},
        "computed_fields": {"x": expr},
    }
    with pytest.raises((ValidationError, AudienceError), match="computed field 'x'"):
        render_audience(AudienceSpec.model_validate(raw), settings=settings)


def test_computed_fields_still_take_any_scalar_expression(settings):
    spec = template_spec(
        settings,
        "SELECT person_id FROM {{ events }} WHERE big_buy",
        computed_fields={"big_buy": "CASE WHEN coalesce(revenue, 0) > 10 THEN true ELSE false END"},
    )
    assert evaluate_audience(spec, settings=settings, as_of=AS_OF).members.num_rows == 1


@pytest.mark.parametrize(
    "name", ['revenue"; DROP TABLE x; --', "dimensions.a' OR '1'='1", "dimensions.a;b", "../x"]
)
def test_field_names_are_a_whitelist(name):
    with pytest.raises(FieldError, match="unknown event field"):
        event_field(name)


@pytest.mark.parametrize(
    "value",
    ["'; DROP TABLE raw_events; --", "x' OR 1=1 --", "$$; COPY raw_persons TO '/tmp/x'", "\\'"],
)
def test_rule_values_stay_values(settings, value):
    spec = AudienceSpec.model_validate(
        {
            "id": "hostile",
            "name": "Hostile",
            "refresh": {"frequency": "daily", "lookback_days": 3},
            "filter": {"rules": {"event": {"field": "event_type", "op": "equals", "value": value}}},
        }
    )
    result = evaluate_audience(spec, settings=settings, as_of=AS_OF)
    assert result.members.num_rows == 0 and value not in result.stats["sql"]
