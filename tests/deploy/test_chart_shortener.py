"""What the shortener needs from the chart: migrations, its click worker, shared blobs.

- A helm hook Job per enabled service whose code keeps migrations runs `blueprint
  migrate <svc>` before the new pods start, as those pods would run (image, settings,
  database Secret, securityContext), with the newer release's image.
- `blueprint work shortener-clicks` runs as a worker by default.
- Every shortener pod mounts one ReadWriteMany volume, and BLUEPRINT_SHORTENER_BLOB_DIR
  points into it; without it, an emptyDir per pod at the same place.
"""

from __future__ import annotations

import pytest
import yaml
from chart_render import (
    CHART,
    CI_VALUES,
    FIXED_SECRETS,
    Doc,
    container_env,
    of_kind,
    pod_spec,
    render,
    render_error,
)

from blueprint.infra.queue.registry import WORKERS
from blueprint.infra.sql.migrations import has_migrations

VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
EVERYTHING = CHART / "ci" / "everything-on-values.yaml"
EXTERNAL = CHART / "ci" / "external-databases-values.yaml"
BLOB_DIR = "BLUEPRINT_SHORTENER_BLOB_DIR"
IMAGE = "ghcr.io/blueprint/blueprint"


@pytest.fixture(params=CI_VALUES, ids=lambda p: p.name.removesuffix("-values.yaml"))
def docs(request: pytest.FixtureRequest) -> tuple[Doc, ...]:
    return render((request.param,))


def servers(docs: tuple[Doc, ...]) -> dict[str, Doc]:
    """The live Service of every enabled service, by service name."""
    return {
        name: service
        for name, service in of_kind(docs, "Service").items()
        if service["metadata"]["labels"].get("blueprint.io/role") == "live"
    }


def only_container(doc: Doc) -> Doc:
    (container,) = pod_spec(doc)["containers"]
    return container


def secret_refs(container: Doc) -> dict[str, Doc]:
    return {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }


# -- migrations ------------------------------------------------------------------------


def test_values_flag_exactly_the_services_whose_code_keeps_migrations() -> None:
    flagged = {name for name, v in VALUES["services"].items() if (v or {}).get("migrations")}
    assert flagged == {name for name in VALUES["services"] if has_migrations(name)}
    assert flagged == {"shortener"}
    assert VALUES["services"]["diag"]["migrations"] is False


def test_a_migration_job_per_enabled_service_with_migrations(docs: tuple[Doc, ...]) -> None:
    jobs = of_kind(docs, "Job")
    expected = {f"{name}-migrate": name for name in servers(docs) if has_migrations(name)}
    assert set(jobs) == set(expected)
    for job_name, service in expected.items():
        assert only_container(jobs[job_name])["args"] == ["migrate", service]


def test_the_migration_job_is_a_bounded_hook_before_the_pods(docs: tuple[Doc, ...]) -> None:
    accounts = of_kind(docs, "ServiceAccount")
    for name, job in of_kind(docs, "Job").items():
        annotations = job["metadata"]["annotations"]
        hooks = set(annotations["helm.sh/hook"].split(","))
        assert "pre-upgrade" in hooks and hooks & {"pre-install", "post-install"}, name
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        assert job["spec"]["backoffLimit"] >= 1
        assert job["spec"]["activeDeadlineSeconds"] >= 300
        spec = pod_spec(job)
        assert spec["restartPolicy"] == "Never"
        assert spec["automountServiceAccountToken"] is False
        # Its ServiceAccount is a hook of the same events, created before it.
        account = accounts[spec["serviceAccountName"]]["metadata"]["annotations"]
        assert account["helm.sh/hook"] == annotations["helm.sh/hook"]
        assert int(account["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])


def test_the_migration_pod_runs_like_the_service_pods(docs: tuple[Doc, ...]) -> None:
    deployments = of_kind(docs, "Deployment")
    for name, job in of_kind(docs, "Job").items():
        service = name.removesuffix("-migrate")
        container = only_container(job)
        # The colour whose image migrates: its settings are the ones the Job runs with.
        [server] = [
            deployments[f"{service}-{color}"]
            for color in ("blue", "green")
            if only_container(deployments[f"{service}-{color}"])["image"] == container["image"]
        ][:1]
        served = only_container(server)
        job_spec, server_spec = pod_spec(job), pod_spec(server)
        assert job_spec["securityContext"] == server_spec["securityContext"]
        assert container["securityContext"] == served["securityContext"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["resources"] == served["resources"]
        assert container["image"].split("@")[0].rsplit(":", 1)[0] == IMAGE
        assert job_spec.get("imagePullSecrets") == server_spec.get("imagePullSecrets")
        # The service's settings, inline (a pre-upgrade hook would read the previous
        # release's ConfigMap), and its database Secret.
        assert "envFrom" not in container
        env = container_env(container, docs)
        expected = container_env(served, docs)
        expected.pop(BLOB_DIR, None)
        assert env == expected
        assert secret_refs(container) == {
            "BLUEPRINT_DATABASE_URL": secret_refs(served)["BLUEPRINT_DATABASE_URL"]
        }
        volumes = {v["name"]: v for v in job_spec["volumes"]}
        (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert "emptyDir" in volumes[tmp["name"]]
        # Default deny applies, and the mesh-client label opens the way to the database.
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "blueprint"
        assert labels["blueprint.io/mesh-client"] == "true"
        assert "color" not in labels


def test_first_install_hook_depends_on_where_the_database_is() -> None:
    (in_chart,) = of_kind(render((), FIXED_SECRETS), "Job").values()
    (external,) = of_kind(render((EXTERNAL,)), "Job").values()
    # The in-chart PostgreSQL exists only after pre-install hooks: post-install there.
    assert in_chart["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"
    assert external["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert secret_refs(only_container(external)) == {
        "BLUEPRINT_DATABASE_URL": {"name": "blueprint-external-postgresql", "key": "database-url"}
    }


def migration_image(*sets: str) -> str:
    (job,) = of_kind(render((), (*FIXED_SECRETS, *sets)), "Job").values()
    return str(only_container(job)["image"])


@pytest.mark.parametrize("live", ["blue", "green"])
def test_the_newer_release_migrates_whichever_colour_is_live(live: str) -> None:
    newer_on_green = ("colors.blue.tag=0.9.0", "colors.green.tag=0.10.0", f"activeColor={live}")
    assert migration_image(*newer_on_green) == f"{IMAGE}:0.10.0"
    newer_on_blue = ("colors.blue.tag=1.2.0", "colors.green.tag=1.2.0-rc.1", f"activeColor={live}")
    assert migration_image(*newer_on_blue) == f"{IMAGE}:1.2.0"
    # The same tag on both: the live colour's image, which is the same image.
    assert migration_image(f"activeColor={live}") == f"{IMAGE}:0.1.0"


def test_tags_that_are_not_versions_need_the_colour_named() -> None:
    sets = ("colors.blue.tag=3f2a9c1", "colors.green.tag=8be41d0")
    error = render_error(sets=(*FIXED_SECRETS, *sets))
    assert "set migrationJob.color to the colour with the newer release" in error
    assert migration_image(*sets, "migrationJob.color=green") == f"{IMAGE}:8be41d0"


def test_no_migration_job_without_a_service_that_migrates() -> None:
    docs = render((), (*FIXED_SECRETS, "services.shortener.enabled=false"))
    assert of_kind(docs, "Job") == {}
    assert "blueprint-migrate" not in of_kind(docs, "ServiceAccount")
    assert "shortener-blobs" not in of_kind(docs, "PersistentVolumeClaim")


# -- the click worker ------------------------------------------------------------------


def test_the_click_worker_runs_by_default() -> None:
    assert set(VALUES["workers"]) <= set(WORKERS)
    docs = render((), FIXED_SECRETS)
    deployments = of_kind(docs, "Deployment")
    live, idle = (
        deployments["shortener-clicks-worker-blue"],
        deployments["shortener-clicks-worker-green"],
    )
    for deployment in (live, idle):
        assert deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
        assert only_container(deployment)["args"] == ["work", "shortener-clicks"]
    assert live["spec"]["replicas"] == VALUES["defaults"]["replicas"]
    assert idle["spec"]["replicas"] == 0
    assert "shortener-clicks-worker" in of_kind(docs, "PodDisruptionBudget")


def test_every_ci_click_worker_runs_the_registered_name(docs: tuple[Doc, ...]) -> None:
    for name, deployment in of_kind(docs, "Deployment").items():
        if name.startswith("shortener-clicks-worker-"):
            assert only_container(deployment)["args"] == ["work", "shortener-clicks"]


# -- blobs -----------------------------------------------------------------------------


def shortener_pods(docs: tuple[Doc, ...]) -> list[Doc]:
    return [
        d
        for d in of_kind(docs, "Deployment").values()
        if d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "shortener"
    ]


def blob_volume(deployment: Doc, docs: tuple[Doc, ...]) -> Doc:
    """The volume BLUEPRINT_SHORTENER_BLOB_DIR lives on."""
    container = only_container(deployment)
    blob_dir = container_env(container, docs)[BLOB_DIR]
    (mount,) = [m for m in container["volumeMounts"] if blob_dir.startswith(m["mountPath"])]
    assert not mount.get("readOnly")
    (volume,) = [v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"]]
    return volume


def test_every_shortener_pod_shares_one_rwx_blob_volume(docs: tuple[Doc, ...]) -> None:
    pods = shortener_pods(docs)
    if not pods:
        assert "shortener-blobs" not in of_kind(docs, "PersistentVolumeClaim")
        return
    assert {d["metadata"]["name"] for d in pods} == {"shortener-blue", "shortener-green"}
    claim = of_kind(docs, "PersistentVolumeClaim")["shortener-blobs"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for deployment in pods:
        volume = blob_volume(deployment, docs)
        assert volume["persistentVolumeClaim"] == {"claimName": "shortener-blobs"}


def test_blob_volume_size_and_storage_class_come_from_values() -> None:
    claims = of_kind(render((), FIXED_SECRETS), "PersistentVolumeClaim")
    assert claims["shortener-blobs"]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert "storageClassName" not in claims["shortener-blobs"]["spec"]  # the default class
    claim = of_kind(render((EVERYTHING,)), "PersistentVolumeClaim")["shortener-blobs"]
    assert claim["spec"]["storageClassName"] == "efs-sc"
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"


def test_without_the_volume_blobs_go_to_a_per_pod_empty_dir() -> None:
    docs = render((), (*FIXED_SECRETS, "services.shortener.blobs.enabled=false"))
    assert "shortener-blobs" not in of_kind(docs, "PersistentVolumeClaim")
    for deployment in shortener_pods(docs):
        assert blob_volume(deployment, docs)["emptyDir"] == {"sizeLimit": "10Gi"}


def test_only_shortener_server_pods_mount_the_blobs() -> None:
    docs = render((EVERYTHING,))
    for workload in (*of_kind(docs, "Deployment").values(), *of_kind(docs, "Job").values()):
        container = only_container(workload)
        claims = [v for v in pod_spec(workload)["volumes"] if "persistentVolumeClaim" in v]
        is_server = workload in shortener_pods(docs)
        assert bool(claims) == is_server, workload["metadata"]["name"]
        assert (BLOB_DIR in container_env(container, docs)) == is_server
