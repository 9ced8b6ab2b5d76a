from __future__ import annotations

import pytest
from pydantic import ValidationError

from blueprint.mesh.settings import Settings


def test_settings_come_from_blueprint_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BLUEPRINT_LEASE_TTL_SECONDS", "7.5")
    monkeypatch.setenv("BLUEPRINT_BALANCERS", '{"diag": "round_robin"}')
    monkeypatch.setenv("BLUEPRINT_STATIC_ENDPOINTS", '{"diag": ["10.0.0.1:1", "10.0.0.2:1"]}')
    settings = Settings()
    assert settings.lease_ttl_seconds == 7.5
    assert settings.balancer_for("diag") == "round_robin"
    assert settings.balancer_for("other") == settings.balancer == "p2c_expected_latency"
    assert settings.static_endpoints["diag"] == ["10.0.0.1:1", "10.0.0.2:1"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BLUEPRINT_BALANCER", "fastest"),
        ("BLUEPRINT_LEASE_TTL_SECONDS", "0"),
        ("BLUEPRINT_PORT", "70000"),
        ("BLUEPRINT_REPLICAS", "0"),
        ("BLUEPRINT_REDIS_PREFIX", "has space"),
        ("BLUEPRINT_DISCOVERY", "zookeeper"),
    ],
)
def test_bad_values_fail_fast(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_resync_may_not_exceed_the_lease() -> None:
    with pytest.raises(ValidationError, match="resync_seconds"):
        Settings(lease_ttl_seconds=1, resync_seconds=2)
