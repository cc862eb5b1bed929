"""The audience stage operators, run with a hand-made context (no Airflow scheduler)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pyarrow.parquet as pq
import pytest
import yaml

from cja_audiences.adobe.auth import AdobeConfig
from cja_audiences.airflow.operators.audience import AudienceComputeOperator
from cja_audiences.extract.synthetic import generate_synthetic
from cja_audiences.lake.layout import Lake

pytestmark = pytest.mark.integration

AS_OF = date(2026, 11, 20)
ADDERS = {
    "func": "segment",
    "version": [1, 0, 0],
    "container": {
        "func": "container",
        "context": "visitors",
        "pred": {
            "func": "streq",
            "str": "commerce.productListAdds",
            "val": {"func": "attr", "name": "variables/eventtype"},
        },
    },
}


def test_a_segment_by_id_is_fetched_through_the_cja_hook(emu, tmp_path, monkeypatch):
    lake = Lake(tmp_path / "home")
    generate_synthetic(lake, persons=300, days=3, end=AS_OF, seed=4)
    specs = tmp_path / "audiences"
    specs.mkdir()
    segment = emu.add_segment(name="Cart adders", definition=ADDERS)
    (specs / "cart_adders.yaml").write_text(
        yaml.safe_dump(
            {
                "id": "cart_adders",
                "name": "Cart adders",
                "refresh": {"frequency": "daily", "lookback_days": 3},
                "filter": {"segment": {"id": segment["id"]}},
            }
        )
    )
    monkeypatch.setenv("CJA_AUDIENCES_HOME", str(lake.root))
    monkeypatch.setenv("CJA_AUDIENCES_SPECS", str(specs))
    monkeypatch.setenv("AIRFLOW_CONN_CJA_DEFAULT", json.dumps(emu.cja_conn()))

    def no_environment_lookup(conn_id: str) -> AdobeConfig:
        raise AssertionError("the operator must resolve the connection through Airflow")

    monkeypatch.setattr(AdobeConfig, "from_env", no_environment_lookup)
    context = {
        "run_id": "manual__1",
        "params": {"as_of": AS_OF.isoformat()},
        "data_interval_end": datetime(2026, 11, 21, tzinfo=UTC),
    }

    summary = AudienceComputeOperator(task_id="compute", audience_id="cart_adders").execute(context)

    members = pq.read_table(summary["members_path"])
    assert summary["size"] == members.num_rows > 0
    assert set(members["namespace"].to_pylist()) == {"ECID"}
