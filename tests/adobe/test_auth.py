"""IMS tokens: cached per process, and a throttled or failing IMS is retried, not fatal."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from cja_audiences.adobe.auth import ImsError, get_token, invalidate_token

pytestmark = pytest.mark.integration


def test_a_throttled_or_failing_ims_is_retried(emu):
    config = emu.adobe_config()
    invalidate_token(config)
    emu.faults(error_429_rate=1.0, times=1, retry_after_s=0, paths=["/ims"])
    assert get_token(config)
    invalidate_token(config)
    emu.faults(error_503_rate=1.0, times=2, paths=["/ims"])
    assert get_token(config)
    assert emu.stats()["tokens_issued"] == 2


def test_refused_credentials_fail_at_once_naming_the_cause(emu):
    wrong = emu.adobe_config().model_copy(update={"client_secret": SecretStr("not-the-secret")})
    invalidate_token(wrong)
    with pytest.raises(ImsError, match="HTTP 401") as err:
        get_token(wrong)
    assert "not-the-secret" not in str(err.value)
