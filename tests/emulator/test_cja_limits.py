"""CJA's request limits as the emulator keeps them (unit level, no HTTP)."""

from __future__ import annotations

import contextlib

import pytest

from emulator.cja_limits import CjaLimits
from emulator.errors import AdobeHTTPError


def test_at_most_n_reports_of_an_org_run_at_once():
    limits = CjaLimits()
    with contextlib.ExitStack() as running:
        for _ in range(6):
            running.enter_context(limits.report("org", per_minute=100, concurrent=6))
        with pytest.raises(AdobeHTTPError) as refused:
            limits.report("org", per_minute=100, concurrent=6).__enter__()
        assert refused.value.status == 429
        assert refused.value.body["error_code"] == "429050"
        assert "concurrent" in refused.value.body["message"]
        with limits.report("other-org", per_minute=100, concurrent=6):
            pass  # another org has its own budget
    with limits.report("org", per_minute=100, concurrent=6):
        pass  # slots free again once the reports finished


def test_the_user_window_counts_every_request():
    limits = CjaLimits()
    for _ in range(2):
        limits.user("client", limit=2, window_s=60)
    with pytest.raises(AdobeHTTPError, match="429"):
        limits.user("client", limit=2, window_s=60)
    limits.user("other-client", limit=2, window_s=60)
