"""The client secret and every IMS token never reach the lake's files (run.json, ledgers,
dead letters, leases), error messages, logs, a worker's output or the plugin's pages.
Airflow's task logs and XCom of real DAG runs: test_two_dags.py."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest
import yaml
from fastapi.testclient import TestClient

from cja_audiences import snapshots
from cja_audiences.adobe.http import TokenProvider
from cja_audiences.airflow.web import create_app
from cja_audiences.diff import diff_members
from cja_audiences.publish.sent import corrections
from cja_audiences.publish.streaming import PublishError, publish_run
from cja_audiences.settings import get_settings
from tests.publish.helpers import fast_options, make_spec, write_members
from tests.reliability.helpers import OPEN_GUARDRAILS, make_lake

pytestmark = [pytest.mark.reliability, pytest.mark.integration]


def test_secrets_never_leave_the_connection(emu, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    secret = emu.config["client_secret"]
    seen: list[str] = []
    config = emu.adobe_config(rate_limit=0)
    tokens = TokenProvider(config, on_new_token=seen.append)
    lake = make_lake(tmp_path, emu)
    audience = lake.audience_dir
    errors: list[str] = []

    # a publish that sees its token revoked mid-way, then dead-letters too many records
    run = audience / "runs" / "r1"
    write_members(run / "members.parquet", range(4_000))
    diff_members(run, None)
    emu.faults(fail_records=[f"id-p{i:09d}" for i in range(3_000, 3_020)], latency_ms=10)

    def revoke() -> None:
        while len(list((run / "ledger").glob("entered-*.json"))) < 2:
            time.sleep(0.005)
        emu.faults(expire_tokens=True)

    threading.Thread(target=revoke).start()
    options = fast_options(chunk_size=500)
    with pytest.raises(PublishError) as failed:
        publish_run(config, make_spec(), run, options=options, tokens=tokens)
    errors.append(str(failed.value))
    emu.clear_faults()
    # the next run supersedes it and commits; a worker process runs another refresh
    run2 = audience / "runs" / "r2"
    write_members(run2 / "members.parquet", range(1_000))
    diff_members(run2, None, corrections=corrections(audience, "r2"))
    publish_run(config, make_spec(), run2, options=options, tokens=tokens)
    snapshots.commit(audience, run2)
    child = lake.start("r3", range(500, 1_500))
    _out, err = child.communicate(timeout=120)
    worker_output = err.decode()
    assert child.returncode == 0, worker_output
    # a connection with a wrong secret fails with a message that must not echo it either
    wrong = emu.adobe_config(rate_limit=0)
    wrong = type(wrong)(**{**wrong.__dict__, "client_secret": secret + "-WRONG"})
    with pytest.raises(Exception) as refused:
        TokenProvider(wrong).token()
    errors.append(str(refused.value))

    spec = make_spec(guardrails=OPEN_GUARDRAILS).model_dump(mode="json", exclude={"source_path"})
    (lake.specs / "high_value.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("CJA_AUDIENCES_HOME", str(lake.home))
    monkeypatch.setenv("CJA_AUDIENCES_SPECS", str(lake.specs))
    get_settings.cache_clear()
    client = TestClient(create_app())
    pages = [client.get(p).text for p in ("/", "/audiences/high_value/runs")]
    get_settings.cache_clear()

    assert len(seen) >= 2, "the test must see a token renewal"
    haystacks = {
        **{str(p): p.read_bytes().decode("latin-1") for p in lake.home.rglob("*") if p.is_file()},
        "errors": json.dumps(errors),
        "logs": caplog.text,
        "worker": worker_output,
        "pages": json.dumps(pages),
    }
    assert any("dead_letter" in name for name in haystacks)
    for needle in [secret, *seen]:
        leaks = [name for name, text in haystacks.items() if needle in text]
        assert not leaks, f"a secret ({needle[:4]}...) leaked into {leaks}"
