"""The run page's publish card says what each mode did (or would do) in its own words."""

from __future__ import annotations

import re

import pytest

from cja_audiences.airflow.web.render import environment

EXTERNAL = {
    "publish_mode": "external_audience",
    "differential": True,
    "file": "scheduled__2.csv",
    "records": 30,
    "entered": 20,
    "exited": 10,
}


def card(publish: dict) -> str:
    html = environment().get_template("_publish.html").render(publish=publish, run={}, spec={})
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.mark.parametrize(
    ("publish", "says"),
    [
        (
            {**EXTERNAL, "status": "dry_run"},
            "Dry run: a differential ingestion of scheduled__2.csv, 30 rows (+20 / −10) would be "
            "written and run. Nothing was sent.",
        ),
        (
            {
                **EXTERNAL,
                "status": "ok",
                "differential": False,
                "run_id": "r-9",
                "run_status": "SUCCESS",
            },
            "External audience: a full ingestion of scheduled__2.csv, 30 rows (+20 / −10): "
            "AEP run r-9, SUCCESS.",
        ),
        (
            {"status": "dry_run", "would_send": 5, "records": 5, "requests": 1, "refused": 0},
            "Dry run: 5 of 5 records would be sent in 1 requests; 0 refused. Nothing was sent.",
        ),
    ],
)
def test_the_publish_card_names_the_mode(publish, says):
    assert says in card(publish)
