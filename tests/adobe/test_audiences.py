"""Registering the audience: Adobe's refusals say which entitlement or setting is missing."""

from __future__ import annotations

import pytest

from cja_audiences.adobe.audiences import RegistrationRefused, ensure_audience
from cja_audiences.adobe.auth import MissingAudienceNamespace
from cja_audiences.adobe.http import PlatformClient, TokenProvider
from cja_audiences.publish.streaming import publish_run
from tests.publish.helpers import fast_options, make_spec, write_members

pytestmark = pytest.mark.integration


def register(emu):
    config = emu.adobe_config()
    with PlatformClient(config, TokenProvider(config), max_retries=0) as client:
        return ensure_audience(client, make_spec(), segment_namespace=config.segment_namespace)


def test_org_not_enabled_for_external_segments(emu):
    emu.org(external_segments=False)
    with pytest.raises(RegistrationRefused) as refused:
        register(emu)
    message = str(refused.value)
    assert "not enabled for external audiences (UPAPI-113740-403)" in message
    assert "Ask Adobe support" in message and "high_value" in message


def test_abac_refusal_names_the_permission(emu):
    register(emu)  # exists already: the next registration is an update (a write)
    emu.org(abac_write=False)
    changed = make_spec(description="changed")
    config = emu.adobe_config()
    with (
        PlatformClient(config, TokenProvider(config), max_retries=0) as client,
        pytest.raises(RegistrationRefused) as refused,
    ):
        ensure_audience(client, changed, segment_namespace=config.segment_namespace)
    assert "attribute-based access control, UPAPI-113752-403" in str(refused.value)
    assert "'Manage Audiences'" in str(refused.value)


def test_publishing_without_an_audience_namespace_fails_first(emu, tmp_path):
    run_dir = tmp_path / "run"
    write_members(run_dir / "entered.parquet", range(3))
    write_members(run_dir / "exited.parquet", [])
    with pytest.raises(MissingAudienceNamespace) as missing:
        publish_run(
            emu.adobe_config(segment_namespace=None), make_spec(), run_dir, options=fast_options()
        )
    assert "extra field 'segment_namespace'" in str(missing.value)
    assert "Non-people identifier" in str(missing.value)
    assert emu.stats()["messages"]["accepted"] == 0
