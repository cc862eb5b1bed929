"""Fault injection: every mode, switched at run time through the admin route."""

from __future__ import annotations

import time

import pytest
import requests

from tests.emulator.xdm import profile_message

AUDIENCES = "/data/core/ups/audiences"


def test_latency_and_jitter(client):
    client.emu.faults(latency_ms=150, jitter_ms=100, seed=7)
    for _ in range(3):
        started = time.perf_counter()
        assert client.get(AUDIENCES).status_code == 200
        elapsed = time.perf_counter() - started
        assert elapsed >= 0.15  # the latency floor; no upper bound on a shared machine


def test_429_with_retry_after(client):
    client.emu.faults(error_429_rate=1.0, retry_after_s=2.5, times=1)
    response = client.get(AUDIENCES)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert response.json()["title"] == "Too Many Requests"
    assert client.get(AUDIENCES).status_code == 200  # `times` spent


def test_429_without_retry_after(client):
    client.emu.faults(error_429_rate=1.0, times=1)
    response = client.stream([profile_message(client.emu.config, "e1")])
    assert response.status_code == 429
    assert "Retry-After" not in response.headers
    body = response.json()
    assert body["type"] == "https://ns.adobe.com/adobecloud/problem/data-collection-service"
    assert client.emu.membership("aud-1") == []


def test_429_window(client):
    client.emu.faults(error_429_for_s=0.5)
    assert client.get(AUDIENCES).status_code == 429
    assert client.get(AUDIENCES).status_code == 429
    time.sleep(0.6)
    assert client.get(AUDIENCES).status_code == 200


@pytest.mark.parametrize("status", [500, 503])
def test_error_rates(client, status):
    client.emu.faults(**{f"error_{status}_rate": 1.0, "times": 2})
    statuses = [client.get(AUDIENCES).status_code for _ in range(3)]
    assert statuses == [status, status, 200]


def test_partial_error_rate_is_seeded(client):
    client.emu.faults(error_503_rate=0.5, seed=42)
    statuses = {client.get(AUDIENCES).status_code for _ in range(30)}
    assert statuses == {200, 503}


def test_errors_use_each_service_dialect(client):
    emu = client.emu
    emu.faults(error_429_rate=1.0)
    cja = client.get("/segments")
    assert cja.json() == {"error_code": "429050", "message": "Too many requests"}
    ims = requests.post(f"{emu.url}/ims/token/v3", timeout=10)
    assert ims.status_code == 429 and ims.json()["error"] == "too_many_requests"


def test_hang_never_answers(client):
    client.emu.faults(hang_rate=1.0, times=1)
    with pytest.raises(requests.Timeout):
        client.get(AUDIENCES, timeout=0.5)
    assert client.get(AUDIENCES).status_code == 200


def test_dropped_connection(client):
    client.emu.faults(drop_rate=1.0, times=1)
    with pytest.raises(requests.ConnectionError):
        requests.get(client.emu.url + AUDIENCES, headers=client.headers(), timeout=5)
    assert client.get(AUDIENCES).status_code == 200


def test_expire_all_tokens(client):
    assert client.get(AUDIENCES).status_code == 200
    client.emu.faults(expire_tokens=True)
    assert client.get(AUDIENCES).status_code == 401
    client.token = client.emu.token()
    assert client.get(AUDIENCES).status_code == 200


def test_partial_207_for_chosen_records(client):
    c = client.emu.config
    client.emu.faults(fail_records=["e1"], fail_record_status=503, fail_record_times=1)
    messages = [profile_message(c, f"e{i}") for i in range(3)]
    body = client.stream(messages).json()
    assert [r.get("statusCode") for r in body["responses"]] == [None, 503, None]
    assert sorted(m["identity"] for m in client.emu.membership("aud-1")) == ["e0", "e2"]
    retry = client.stream([messages[1]]).json()
    assert "xactionId" in retry["responses"][0]
    assert len(client.emu.membership("aud-1")) == 3


def test_record_failure_rate(client):
    client.emu.faults(fail_record_rate=1.0)
    body = client.stream([profile_message(client.emu.config, f"e{i}") for i in range(4)]).json()
    assert {r["statusCode"] for r in body["responses"]} == {500}
    assert client.emu.stats()["messages"]["rejected"] == 4


def test_requests_per_second_cap(client):
    client.emu.faults(max_requests_per_s=3, retry_after_s=1)
    started = time.monotonic()
    statuses = [client.get(AUDIENCES).status_code for _ in range(10)]
    seconds = int(time.monotonic() - started) + 2
    assert 429 in statuses
    assert statuses.count(200) <= 3 * seconds


def test_messages_per_second_cap(client):
    c = client.emu.config
    client.emu.faults(max_messages_per_s=10)
    too_many = client.stream([profile_message(c, f"e{i}") for i in range(11)])
    assert too_many.status_code == 429
    fits = client.stream([profile_message(c, f"e{i}") for i in range(10)])
    assert fits.status_code in (207, 429)  # 429 only if the 1 s window had already filled
    assert len(client.emu.membership("aud-1")) in (0, 10)


def test_faults_limited_to_paths(client):
    client.emu.faults(error_503_rate=1.0, paths=["/collection"])
    assert client.get(AUDIENCES).status_code == 200
    assert client.stream([profile_message(client.emu.config, "e1")]).status_code == 503


def test_admin_routes_are_never_faulted(emu):
    emu.faults(error_500_rate=1.0, drop_rate=1.0)
    for route in ("health", "stats", "faults", "membership/aud-1"):
        assert requests.get(f"{emu.url}/_emulator/{route}", timeout=5).status_code == 200


def test_unknown_fault_mode_is_refused(emu):
    with pytest.raises(AssertionError, match="HTTP 400"):
        emu.faults(error_999_rate=1.0)
    with pytest.raises(AssertionError, match="HTTP 400"):
        emu.faults(error_500_rate=2.0)


def test_reset_and_clear_switch_faults_off(emu):
    emu.faults(error_500_rate=1.0, latency_ms=10)
    emu.reset()
    modes = emu.faults()
    assert (modes["error_500_rate"], modes["latency_ms"]) == (0.0, 0.0)
    emu.faults(error_503_rate=1.0)
    assert emu.clear_faults()["error_503_rate"] == 0.0


def test_injected_responses_are_counted_by_route(client):
    client.emu.faults(error_503_rate=1.0, times=1)
    client.get(AUDIENCES)
    client.get(AUDIENCES)
    assert client.emu.stats()["requests"][f"GET {AUDIENCES}"] == {"200": 1, "503": 1}
