from __future__ import annotations

import json
import random

import pytest

from cja_audiences.adobe.sender import (
    MAX_REQUEST_BYTES,
    pack,
    parse_multi_status,
    request_body,
)


def items(sizes: list[int]) -> list[tuple[int, bytes]]:
    return [(i, json.dumps("x" * (n - 2)).encode()) for i, n in enumerate(sizes)]


@pytest.mark.parametrize("seed", range(5))
def test_pack_keeps_order_and_every_body_fits_the_budget(seed):
    rng = random.Random(seed)
    sizes = [rng.choice([50, 400, 5_000, 90_000]) for _ in range(500)]
    budget = 200_000
    requests_, oversize = pack(items(sizes), budget)
    assert oversize == []
    assert [k for r in requests_ for k, _ in r] == list(range(500))
    for request in requests_:
        body = request_body(m for _, m in request)
        assert len(body) <= budget
        assert len(json.loads(body)["messages"]) == len(request)
    # greedy: adding the next request's first message would have broken the budget
    for left, right in zip(requests_, requests_[1:], strict=False):
        assert len(request_body([*(m for _, m in left), right[0][1]])) > budget


def test_pack_exact_fit_and_oversize():
    budget = 1_000
    exact = budget - len(b'{"messages":[]}')
    requests_, oversize = pack(items([exact, exact + 1, 10]), budget)
    assert [[k for k, _ in r] for r in requests_] == [[0], [2]]
    assert [k for k, _ in oversize] == [1]
    assert len(request_body([requests_[0][0][1]])) == budget


def test_default_budget_is_safely_under_one_megabyte():
    from cja_audiences.adobe.sender import SendOptions

    assert SendOptions().byte_budget <= 0.95 * MAX_REQUEST_BYTES
    with pytest.raises(ValueError):
        SendOptions(byte_budget=MAX_REQUEST_BYTES + 1)


def test_multi_status_is_read_per_message():
    body = {
        "inletId": "i",
        "batchId": "b",
        "responses": [
            {"xactionId": "1:2:3:0"},
            {"statusCode": 400, "message": "Message has unknown xdm format"},
            {"xactionId": "1:2:3:2"},
            {"statusCode": 503, "message": "busy"},
        ],
    }
    assert parse_multi_status(body, 4) == [
        (1, 400, "Message has unknown xdm format"),
        (3, 503, "busy"),
    ]


def test_multi_status_missing_answers_count_as_failed():
    assert parse_multi_status({"responses": [{"xactionId": "x"}]}, 3) == [
        (1, None, "no per-message response"),
        (2, None, "no per-message response"),
    ]
    assert len(parse_multi_status("not json", 2)) == 2
