"""What every pod the chart renders must carry, under every CI value set.

Probes on grpc.health.v1, requests and limits, Pod Security "restricted" plus a
read-only root filesystem, a grace period covering the runtime's drain, HPAs
that target Deployments which exist, Services that select pods which exist.
"""

from __future__ import annotations

import pytest
from chart_render import (
    CI_VALUES,
    FIXED_SECRETS,
    Doc,
    container_env,
    of_kind,
    pod_spec,
    render,
    workloads,
)

GRPC_PORT, METRICS_PORT = 50051, 9464


@pytest.fixture(params=CI_VALUES, ids=lambda p: p.name.removesuffix("-values.yaml"))
def docs(request: pytest.FixtureRequest) -> tuple[Doc, ...]:
    return render((request.param,))


def blueprint_deployments(docs: tuple[Doc, ...]) -> list[Doc]:
    return [
        d
        for d in of_kind(docs, "Deployment").values()
        if d["metadata"]["labels"]["app.kubernetes.io/component"] in ("server", "worker")
    ]


def test_every_deployment_probes_grpc_health(docs: tuple[Doc, ...]) -> None:
    # Readiness: the workload's own name, NOT_SERVING while draining or a hard
    # dependency is down. Startup and liveness: "liveness", independent of dependencies
    # (a database outage must neither restart pods nor keep new ones from starting).
    deployments = blueprint_deployments(docs)
    assert deployments
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        labels = deployment["metadata"]["labels"]
        # Servers are named after the service, workers "<worker>-worker".
        health_name = labels["app.kubernetes.io/name"].removesuffix("-worker")
        for container in pod_spec(deployment)["containers"]:
            assert container["readinessProbe"]["grpc"] == {
                "port": GRPC_PORT,
                "service": health_name,
            }, name
            for probe in ("startupProbe", "livenessProbe"):
                assert container[probe]["grpc"] == {"port": GRPC_PORT, "service": "liveness"}, (
                    name,
                    probe,
                )


def test_every_container_has_requests_and_limits(docs: tuple[Doc, ...]) -> None:
    for workload in workloads(docs):
        for container in pod_spec(workload)["containers"]:
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[bound]), workload["metadata"]["name"]


def test_every_pod_meets_restricted_with_a_read_only_root(docs: tuple[Doc, ...]) -> None:
    for workload in workloads(docs):
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == 10001, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, name
            assert context["runAsUser"] == 10001, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}: /tmp must be writable"


def test_grace_period_covers_prestop_propagation_and_drain(docs: tuple[Doc, ...]) -> None:
    for deployment in blueprint_deployments(docs):
        spec = pod_spec(deployment)
        (container,) = spec["containers"]
        env = container_env(container, docs)
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        propagation = float(env["BLUEPRINT_PROPAGATION_SECONDS"])
        drain = float(env["BLUEPRINT_DRAIN_GRACE_SECONDS"])
        # Strictly more: closing channels and exiting take a moment too.
        assert spec["terminationGracePeriodSeconds"] > pre_stop + propagation + drain, deployment[
            "metadata"
        ]["name"]


def test_every_hpa_targets_an_existing_live_deployment(docs: tuple[Doc, ...]) -> None:
    deployments = of_kind(docs, "Deployment")
    hpas = of_kind(docs, "HorizontalPodAutoscaler")
    for name, hpa in hpas.items():
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
        assert target["name"] in deployments, f"HPA {name} targets a missing Deployment"
        live = deployments[target["name"]]["spec"]["selector"]["matchLabels"]["color"]
        services = of_kind(docs, "Service")
        assert services[name]["spec"]["selector"]["color"] == live, "HPA scales the idle colour"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert hpa["spec"]["metrics"], name


def test_every_service_selects_pods_of_a_deployment(docs: tuple[Doc, ...]) -> None:
    templates = [
        d["spec"]["template"]["metadata"]["labels"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    ]
    for name, service in of_kind(docs, "Service").items():
        selector = service["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in templates), name
        if service["metadata"]["labels"].get("app.kubernetes.io/component") == "server":
            ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
            assert ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT}, name


def test_every_blueprint_pod_can_watch_endpointslices_and_nothing_more(
    docs: tuple[Doc, ...],
) -> None:
    (role,) = of_kind(docs, "Role").values()
    assert role["rules"] == [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    (binding,) = of_kind(docs, "RoleBinding").values()
    (subject,) = binding["subjects"]
    for deployment in blueprint_deployments(docs):
        spec = pod_spec(deployment)
        assert spec["serviceAccountName"] == subject["name"]
        assert spec["automountServiceAccountToken"] is True
        env = container_env(spec["containers"][0], docs)
        assert env["BLUEPRINT_DISCOVERY"] == "kubernetes"
        assert env["BLUEPRINT_KUBERNETES_PORT_NAME"] == "grpc"


def test_pods_are_spread_per_service_and_colour(docs: tuple[Doc, ...]) -> None:
    for deployment in blueprint_deployments(docs):
        selector = deployment["spec"]["selector"]["matchLabels"]
        constraints = pod_spec(deployment)["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in constraints} >= {"kubernetes.io/hostname"}
        for constraint in constraints:
            assert constraint["labelSelector"]["matchLabels"] == selector


def test_default_deny_covers_every_pod(docs: tuple[Doc, ...]) -> None:
    policies = of_kind(docs, "NetworkPolicy")
    (deny,) = [p for n, p in policies.items() if n.endswith("-default-deny")]
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    selector = deny["spec"]["podSelector"]["matchLabels"]
    for workload in workloads(docs):
        labels = workload["spec"].get("template", {}).get("metadata", {}).get("labels")
        if workload["kind"] == "CronJob":
            labels = workload["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        if workload["kind"] == "Pod":
            labels = workload["metadata"]["labels"]
        assert selector.items() <= labels.items(), workload["metadata"]["name"]


def _rolled_by(values: tuple[object, ...], change: str) -> list[str]:
    before = of_kind(render(values, FIXED_SECRETS), "Deployment")
    after = of_kind(render(values, (*FIXED_SECRETS, change)), "Deployment")

    def checksum(doc: Doc) -> str:
        return str(doc["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    return sorted(name for name in before if checksum(before[name]) != checksum(after[name]))


def test_a_setting_change_rolls_only_that_services_unpinned_pods() -> None:
    change = "services.media.env.BLUEPRINT_DIAG_SLOWDOWN=2"
    # Nothing pinned (a fresh install): both colours take it.
    assert _rolled_by((), change.replace("media", "diag")) == ["diag-blue", "diag-green"]
    # everything-on pins blue (colors.blue.settings): only the idle green takes it.
    pinned = (CI_VALUES[0].parent / "everything-on-values.yaml",)
    assert _rolled_by(pinned, change) == ["media-green"]


def test_a_pinned_colour_renders_its_own_settings() -> None:
    docs = render((CI_VALUES[0].parent / "everything-on-values.yaml",), FIXED_SECRETS)
    deployments = of_kind(docs, "Deployment")
    env = {
        color: container_env(pod_spec(deployments[f"diag-{color}"])["containers"][0], docs)
        for color in ("blue", "green")
    }
    assert env["blue"]["BLUEPRINT_TRACE_SAMPLING_RATIO"] == "0.5"  # its pinned copy
    assert env["green"]["BLUEPRINT_TRACE_SAMPLING_RATIO"] == "0.1"  # the values now
    media = {c: pod_spec(deployments[f"media-{c}"]) for c in ("blue", "green")}
    assert (
        container_env(media["blue"]["containers"][0], docs)["BLUEPRINT_DRAIN_GRACE_SECONDS"] == "30"
    )
    # A key the pinned copy lacks comes from the values: the grace period of media.
    assert media["blue"]["terminationGracePeriodSeconds"] == 75


def test_blueprint_pods_may_reach_what_the_mesh_needs(docs: tuple[Doc, ...]) -> None:
    policies = of_kind(docs, "NetworkPolicy")
    (egress,) = [p for n, p in policies.items() if n.endswith("-mesh-egress")]
    rules = egress["spec"]["egress"]
    ports = [{(p["port"], p["protocol"]) for p in rule["ports"]} for rule in rules]
    assert {(53, "UDP"), (53, "TCP")} in ports
    assert {(GRPC_PORT, "TCP")} in ports
    assert any((443, "TCP") in rule for rule in ports), "EndpointSlice watches need the API"
    for store in ("redis", "postgresql"):
        stores = of_kind(docs, "StatefulSet")
        if f"blueprint-{store}" in stores:
            assert {(store, "TCP")} in ports
            inbound = policies[f"blueprint-{store}"]["spec"]["ingress"]
            assert (
                inbound[0]["from"][0]["podSelector"]["matchLabels"]
                == (egress["spec"]["podSelector"]["matchLabels"])
            )
