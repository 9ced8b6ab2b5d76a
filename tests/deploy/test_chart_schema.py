"""Bad values are refused by helm itself, with an error naming the field.

values.schema.json rejects wrong types, unknown services and keys (blobs on a
service other than the shortener), replica counts below 1, colours other than
blue/green, an API server egress rule without ports; the templates refuse what a
schema cannot express (a grace period shorter than the drain, min > max, a budget
with both minAvailable and maxUnavailable).
"""

from __future__ import annotations

import pytest
from chart_render import FIXED_SECRETS, of_kind, pod_spec, render, render_error

REFUSED = [
    # (--set, --set-string, what helm's error must say)
    ((), ("services.diag.replicas=two",), ["/services/diag/replicas", "got string, want integer"]),
    (("services.payments.enabled=true",), (), ["/services", "'payments' not allowed"]),
    (("services.diag.replica=3",), (), ["/services/diag", "'replica' not allowed"]),
    (("services.diag.replicas=0",), (), ["/services/diag/replicas", "minimum: got 0, want 1"]),
    (("defaults.replicas=0",), (), ["/defaults/replicas", "minimum: got 0, want 1"]),
    (("workers.notify.replicas=0",), (), ["/workers/notify/replicas", "minimum"]),
    (("services.diag.hpa.minReplicas=0",), (), ["/services/diag/hpa/minReplicas", "minimum"]),
    (("activeColor=purple",), (), ["/activeColor", "'blue', 'green'"]),
    (("previewReplicas=-1",), (), ["/previewReplicas", "minimum: got -1, want 0"]),
    ((), ("defaults.hpa.enabled=yes",), ["/defaults/hpa/enabled", "want boolean"]),
    (("services.diag.balancer=fastest",), (), ["/services/diag/balancer", "value must be one of"]),
    (("colors.green.tag=",), (), ["/colors/green/tag"]),
    (("redis.enabled=false",), (), ["/redis/external", "existingSecret"]),
    (("cronJobs.nightly.args={job}",), (), ["/cronJobs/nightly", "schedule"]),
    # Only the shortener keeps blobs; migrations is a yes/no; two colours to migrate with.
    (("services.diag.blobs.enabled=true",), (), ["/services/diag", "'blobs' not allowed"]),
    (("services.shortener.blobs.mode=rwx",), (), ["/services/shortener/blobs", "'mode'"]),
    ((), ("services.shortener.blobs.size=lots",), ["/services/shortener/blobs/size"]),
    ((), ("services.shortener.migrations=yes",), ["/services/shortener/migrations", "boolean"]),
    (("migrationJob.color=red",), (), ["/migrationJob/color", "value must be one of"]),
    (("migrationJob.backoffLimit=-1",), (), ["/migrationJob/backoffLimit", "minimum"]),
    (
        ("services.diag.terminationGracePeriodSeconds=20",),
        (),
        ["services.diag: terminationGracePeriodSeconds (20) must be at least", "= 30"],
    ),
    (
        ("services.diag.hpa.minReplicas=5", "services.diag.hpa.maxReplicas=3"),
        (),
        ["services.diag: hpa.minReplicas (5) must not exceed hpa.maxReplicas (3)"],
    ),
    # Issue 9: without ports the API server rule would allow egress to everything.
    (("networkPolicy.apiServer.ports=null",), (), ["/networkPolicy/apiServer", "ports"]),
    (("colors.green.tag=1.0@sha256:abc",), (), ["/colors/green/tag"]),
    (("colors.green.settings.defaults=3",), (), ["/colors/green/settings/defaults", "object"]),
    (("colors.green.settings.extra.a=1",), (), ["/colors/green/settings", "'extra' not allowed"]),
    (("rollout.analysis.maxErrorRatio=2",), (), ["/rollout/analysis/maxErrorRatio", "maximum"]),
    (("rollout.analysis.windowSeconds=-1",), (), ["/rollout/analysis/windowSeconds"]),
    (("podSecurityContext=null",), (), ["podSecurityContext"]),
    (("image.pullPolicy=Sometimes",), (), ["/image/pullPolicy", "value must be one of"]),
    (
        ("defaults.pdb.minAvailable=1",),
        (),
        ["services.diag: pdb sets both minAvailable (1) and maxUnavailable (1)"],
    ),
]


@pytest.mark.parametrize(("sets", "set_strings", "expected"), REFUSED, ids=lambda v: str(v)[:60])
def test_bad_values_are_refused_naming_the_field(
    sets: tuple[str, ...], set_strings: tuple[str, ...], expected: list[str]
) -> None:
    error = render_error(sets=sets, set_strings=set_strings)
    for fragment in expected:
        assert fragment in error, error


def test_a_service_override_of_false_wins_over_the_default() -> None:
    # Sprig's mergeOverwrite would keep `true` here; the chart's merge does not.
    docs = render(
        (), (*FIXED_SECRETS, "services.diag.hpa.enabled=false", "services.diag.replicas=4")
    )
    assert set(of_kind(docs, "HorizontalPodAutoscaler")) == {"shortener"}
    assert of_kind(docs, "Deployment")["diag-blue"]["spec"]["replicas"] == 4


def test_an_external_database_needs_only_its_secret() -> None:
    docs = render(
        (),
        (
            "redis.enabled=false",
            "redis.external.existingSecret=my-redis",
            "postgresql.enabled=false",
            "postgresql.external.existingSecret=my-db",
            "postgresql.external.urlKey=dsn",
        ),
    )
    assert of_kind(docs, "StatefulSet") == {}
    assert of_kind(docs, "Secret") == {}
    (container,) = pod_spec(of_kind(docs, "Deployment")["diag-blue"])["containers"]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    assert refs == {
        "BLUEPRINT_REDIS_URL": {"name": "my-redis", "key": "url"},
        "BLUEPRINT_DATABASE_URL": {"name": "my-db", "key": "dsn"},
    }


def test_the_pod_security_context_is_a_value() -> None:
    docs = render((), (*FIXED_SECRETS, "podSecurityContext.fsGroupChangePolicy=OnRootMismatch"))
    for name, deployment in of_kind(docs, "Deployment").items():
        context = pod_spec(deployment)["securityContext"]
        assert context["fsGroupChangePolicy"] == "OnRootMismatch", name
        assert context["runAsNonRoot"] is True, name  # the restricted defaults stay


def test_a_digest_pinned_colour_is_pulled_if_not_present_and_a_tag_always() -> None:
    digest = "sha256:" + "5e" * 32
    docs = render((), (*FIXED_SECRETS, f"colors.green.tag=0.2.0@{digest}"))
    deployments = of_kind(docs, "Deployment")
    green = pod_spec(deployments["diag-green"])["containers"][0]
    blue = pod_spec(deployments["diag-blue"])["containers"][0]
    assert green["image"] == f"ghcr.io/blueprint/blueprint:0.2.0@{digest}"
    assert green["imagePullPolicy"] == "IfNotPresent"
    assert blue["imagePullPolicy"] == "Always"
    # checkov: a digest meets CKV_K8S_43; IfNotPresent is then deliberate (CKV_K8S_15).
    skips = [s.split("=")[0] for s in deployments["diag-green"]["metadata"]["annotations"].values()]
    assert "CKV_K8S_43" not in skips and "CKV_K8S_15" in skips
    skips = [s.split("=")[0] for s in deployments["diag-blue"]["metadata"]["annotations"].values()]
    assert "CKV_K8S_43" in skips and "CKV_K8S_15" not in skips
