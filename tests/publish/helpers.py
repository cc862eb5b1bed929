"""Helpers for publish and Adobe client tests: member files in MEMBER_SCHEMA, sorted by person_id."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import requests

from cja_audiences import snapshots
from cja_audiences.diff import diff_members
from cja_audiences.lake.layout import read_json, write_parquet
from cja_audiences.lake.schema import MEMBER_SCHEMA
from cja_audiences.publish import publish_run
from cja_audiences.publish.external import STATE_FILE, PollPolicy


def member_table(ids: list[int] | range, namespace: str = "ECID", prefix: str = "id") -> pa.Table:
    persons = sorted(f"p{i:09d}" for i in ids)
    return pa.table(
        {
            "person_id": persons,
            "namespace": [namespace] * len(persons),
            "identity": [f"{prefix}-{p}" for p in persons],
        },
        schema=MEMBER_SCHEMA,
    )


def write_members(path: Path, ids: list[int] | range, **kwargs) -> Path:
    return write_parquet(member_table(ids, **kwargs), path)


def make_spec(**overrides):
    from cja_audiences.specs.model import AudienceSpec

    fields = {
        "id": "high_value",
        "name": "High value customers",
        "description": "Bought twice in 30 days",
        "tags": ["test"],
        "refresh": {"frequency": "daily", "lookback_days": 30},
        "filter": {"template": "purchases.sql.j2"},
    }
    return AudienceSpec.model_validate(fields | overrides)


def fast_options(chunk_size: int = 500, max_dead_letter_share: float = 0.001, **send):
    """Publish options for tests: no rate limit, millisecond backoff, short timeouts."""
    from cja_audiences.adobe.sender import SendOptions
    from cja_audiences.publish.streaming import PublishOptions

    send = {"rate_limit": 0, "backoff_base": 0.01, "backoff_cap": 0.05, "timeout": 5.0} | send
    return PublishOptions(
        chunk_size=chunk_size,
        max_dead_letter_share=max_dead_letter_share,
        send=SendOptions(**send),
    )


def identities(table: pa.Table) -> set[tuple[str, str]]:
    namespaces = table.column("namespace").to_pylist()
    return set(zip(namespaces, table.column("identity").to_pylist(), strict=True))


def held(emu, audience_id: str = "high_value", status: str | None = None) -> set[tuple[str, str]]:
    """(namespace, identity) of the emulator's profiles holding the audience (with status)."""
    return {
        (m["namespace"], m["identity"])
        for m in emu.membership(audience_id)
        if status is None or m["status"] == status
    }


def streaming_requests(emu) -> dict[str, int]:
    return emu.stats()["requests"].get("POST /collection/batch/{inlet_id}", {})


# -- external-audience mode ---------------------------------------------------------------
EXTERNAL = {"publish": {"mode": "external_audience", "ttl_days": 30}}


def fast_poll() -> PollPolicy:
    """Operations and ingestion runs awaited in milliseconds."""
    return PollPolicy(first_wait_s=0.02, max_wait_s=0.1, timeout_s=30)


def external_conn(storage: Path) -> dict:
    return {
        "external_base_connection_id": "conn-1",
        "external_location": str(storage / "audiences"),
        "external_source_path": "audiences",
    }


def refresh(emu, conn: dict, audience_dir: Path, name: str, ids, **publish) -> dict:
    """members -> diff against the committed run -> publish -> commit, as a DAG run does."""
    run_dir = audience_dir / "runs" / name
    run_dir.mkdir(parents=True)
    write_members(run_dir / "members.parquet", ids)
    diff_members(run_dir, snapshots.current_run_dir(audience_dir))
    config = emu.adobe_config(**conn)
    summary = publish_run(config, make_spec(**EXTERNAL), run_dir, poll=fast_poll(), **publish)
    snapshots.commit(audience_dir, run_dir)
    return summary


def held_by(emu, audience_dir: Path) -> set[tuple[str, str]]:
    """(namespace, identity) of the members of the audience's external audience in AEP."""
    aep_id = read_json(audience_dir / STATE_FILE)["audience_id"]
    return {(m["namespace"], m["identity"]) for m in emu.membership(aep_id)}


def ingestion_runs(emu, audience_dir: Path) -> list[dict]:
    aep_id = read_json(audience_dir / STATE_FILE)["audience_id"]
    return requests.get(
        f"{emu.url}/data/core/ais/external-audience/{aep_id}/runs",
        headers=emu.headers(),
        timeout=10,
    ).json()["runs"]
