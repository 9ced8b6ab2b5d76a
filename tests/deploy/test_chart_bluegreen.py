"""Switching activeColor is a cut-over, not a redeploy.

The same release is rendered with blue live and with green live; object by
object, the only differences may be the Services' and PodDisruptionBudgets'
colour selectors, the Deployments' replica counts, the HPAs' targets and the
live colour the workers read, plus the live-colour image of the run-to-completion
pods (CronJobs, the helm test) and the checkov notes about that image.
No Deployment's pod template may change: no pod restarts at a cut-over. The
migration hook Job runs the newer release's image, not the live one's, so it does
not change either, nor does the shortener's blob volume.
"""

from __future__ import annotations

from typing import Any

import pytest
from chart_render import CHART, FIXED_SECRETS, Doc, of_kind, pod_spec, render

BLUE_LIVE = CHART / "ci" / "blue-active-values.yaml"
GREEN_LIVE = CHART / "ci" / "green-active-values.yaml"
TAGS = {"blue": "0.1.0", "green": "0.2.0"}  # as in both files


def diff_paths(old: Any, new: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(old, dict) and isinstance(new, dict):
        paths = []
        for key in sorted(set(old) | set(new), key=str):
            paths += diff_paths(old.get(key), new.get(key), (*path, key))
        return paths
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            p
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            for p in diff_paths(a, b, (*path, i))
        ]
    return [] if old == new else [path]


def by_key(docs: tuple[Doc, ...]) -> dict[tuple[str, str], Doc]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def allowed(kind: str, path: tuple[Any, ...]) -> bool:
    if kind == "Service":
        return path == ("spec", "selector", "color")
    if kind == "PodDisruptionBudget":
        return path == ("spec", "selector", "matchLabels", "color")
    if kind == "Deployment":
        return path == ("spec", "replicas")
    if kind == "HorizontalPodAutoscaler":
        return path == ("spec", "scaleTargetRef", "name")
    if kind == "ConfigMap":  # the workers' live-colour file, updated in place
        return path == ("data", "activeColor")
    if kind in ("CronJob", "Pod"):  # run-to-completion pods take the live colour's image
        return path[-1] in ("image", "color", "app.kubernetes.io/version") or str(
            path[-1]
        ).startswith("checkov.io/skip")
    return False


@pytest.fixture(scope="module")
def renders() -> tuple[dict[tuple[str, str], Doc], dict[tuple[str, str], Doc]]:
    return by_key(render((BLUE_LIVE,), FIXED_SECRETS)), by_key(render((GREEN_LIVE,), FIXED_SECRETS))


def test_the_switch_changes_only_selectors_replicas_and_targets(renders: Any) -> None:
    blue, green = renders
    assert blue.keys() == green.keys(), "a cut-over must neither create nor delete objects"
    unexpected = [
        (kind, name, path)
        for (kind, name), old in blue.items()
        for path in diff_paths(old, green[(kind, name)])
        if not allowed(kind, path)
    ]
    assert unexpected == []


def test_no_deployment_pod_template_changes(renders: Any) -> None:
    blue, green = renders
    for (kind, name), old in blue.items():
        if kind == "Deployment":
            assert old["spec"]["template"] == green[(kind, name)]["spec"]["template"], name


def test_services_follow_the_live_colour(renders: Any) -> None:
    for live, view in zip(("blue", "green"), renders, strict=True):
        idle = "green" if live == "blue" else "blue"
        services = {name: doc for (kind, name), doc in view.items() if kind == "Service"}
        for name in ("diag", "shortener"):
            assert services[name]["spec"]["selector"]["color"] == live
            assert services[f"{name}-preview"]["spec"]["selector"]["color"] == idle


def test_replicas_move_with_the_live_colour(renders: Any) -> None:
    for live, view in zip(("blue", "green"), renders, strict=True):
        idle = "green" if live == "blue" else "blue"
        deployments = {name: doc for (kind, name), doc in view.items() if kind == "Deployment"}
        hpas = {
            name: doc for (kind, name), doc in view.items() if kind == "HorizontalPodAutoscaler"
        }
        # diag: HPA on (min 2); shortener: HPA off, 3 replicas; previewReplicas 1;
        # workers run in both colours while there is a preview (paused when idle).
        assert deployments[f"diag-{live}"]["spec"]["replicas"] == 2
        assert hpas["diag"]["spec"]["scaleTargetRef"]["name"] == f"diag-{live}"
        assert deployments[f"shortener-{live}"]["spec"]["replicas"] == 3
        assert "shortener" not in hpas
        assert deployments[f"diag-{idle}"]["spec"]["replicas"] == 1
        assert deployments[f"shortener-{idle}"]["spec"]["replicas"] == 1
        assert deployments[f"notify-worker-{live}"]["spec"]["replicas"] == 2
        assert deployments[f"notify-worker-{idle}"]["spec"]["replicas"] == 2


def test_each_colour_runs_its_own_tag_whichever_is_live(renders: Any) -> None:
    for view in renders:
        for (kind, name), doc in view.items():
            if kind == "Deployment":
                color = name.rsplit("-", 1)[1]
                images = {c["image"] for c in pod_spec(doc)["containers"]}
                assert images == {f"ghcr.io/blueprint/blueprint:{TAGS[color]}"}, name


def test_run_to_completion_pods_take_the_live_image(renders: Any) -> None:
    for live, view in zip(("blue", "green"), renders, strict=True):
        cronjob = view[("CronJob", "portfolio-snapshots")]
        test_pod = view[("Pod", "blueprint-test-mesh")]
        for doc in (cronjob, test_pod):
            (container,) = pod_spec(doc)["containers"]
            assert container["image"].endswith(f":{TAGS[live]}")


def test_default_values_switch_the_same_way() -> None:
    blue = by_key(render((), FIXED_SECRETS))
    green = by_key(render((), (*FIXED_SECRETS, "activeColor=green")))
    changed = sorted(
        (kind, name, path)
        for (kind, name), old in blue.items()
        for path in diff_paths(old, green[(kind, name)])
    )
    # diag and shortener (HPA on) and the shortener-clicks worker; nothing else: not
    # the migration Job (same tag on both colours), not the blob volume.
    assert changed == sorted(
        [
            *[
                change
                for svc in ("diag", "shortener")
                for change in (
                    ("Deployment", f"{svc}-blue", ("spec", "replicas")),
                    ("Deployment", f"{svc}-green", ("spec", "replicas")),
                    ("HorizontalPodAutoscaler", svc, ("spec", "scaleTargetRef", "name")),
                    ("PodDisruptionBudget", svc, ("spec", "selector", "matchLabels", "color")),
                    ("Service", svc, ("spec", "selector", "color")),
                    ("Service", f"{svc}-preview", ("spec", "selector", "color")),
                )
            ],
            ("Deployment", "shortener-clicks-worker-blue", ("spec", "replicas")),
            ("Deployment", "shortener-clicks-worker-green", ("spec", "replicas")),
            (
                "PodDisruptionBudget",
                "shortener-clicks-worker",
                ("spec", "selector", "matchLabels", "color"),
            ),
            ("ConfigMap", "blueprint-live-color", ("data", "activeColor")),
        ]
    )
    deployments = of_kind(green.values(), "Deployment")
    for svc in ("diag", "shortener", "shortener-clicks-worker"):
        assert deployments[f"{svc}-green"]["spec"]["replicas"] == 2
        assert deployments[f"{svc}-blue"]["spec"]["replicas"] == 0


def test_the_migration_job_and_blob_volume_ignore_the_switch(renders: Any) -> None:
    # Tags differ here (blue 0.1.0, green 0.2.0): the newer one migrates, whichever is live.
    for view in renders:
        job = view[("Job", "shortener-migrate")]
        (container,) = pod_spec(job)["containers"]
        assert container["image"].endswith(f":{TAGS['green']}")
        assert ("PersistentVolumeClaim", "shortener-blobs") in view
    blue, green = renders
    for key in (("Job", "shortener-migrate"), ("ServiceAccount", "blueprint-migrate")):
        assert blue[key] == green[key]
    assert (
        blue[("PersistentVolumeClaim", "shortener-blobs")]
        == green[("PersistentVolumeClaim", "shortener-blobs")]
    )


def _worker_pods(view: dict[tuple[str, str], Doc]) -> dict[str, Doc]:
    return {
        name: doc
        for (kind, name), doc in view.items()
        if kind == "Deployment"
        and doc["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    }


def test_preview_workers_run_and_know_whether_their_colour_is_live(renders: Any) -> None:
    """Issue 9, point 5: the idle colour's workers start with the preview, paused."""
    for live, view in zip(("blue", "green"), renders, strict=True):
        configmaps = {name: doc for (kind, name), doc in view.items() if kind == "ConfigMap"}
        for name, doc in _worker_pods(view).items():
            color = name.rsplit("-", 1)[1]
            assert doc["spec"]["replicas"] == 2, name  # notify: 2, the preview as well
            spec = pod_spec(doc)
            (container,) = spec["containers"]
            env = dict(configmaps[container["envFrom"][0]["configMapRef"]["name"]]["data"])
            assert env["BLUEPRINT_WORKER_COLOR"] == color
            path = env["BLUEPRINT_WORKER_LIVE_COLOR_FILE"]
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            directory, _, key = path.rpartition("/")
            mount = mounts[directory]
            assert mount.get("readOnly") is True and "subPath" not in mount  # updated in place
            volumes = {v["name"]: v for v in spec["volumes"]}
            source = volumes[mount["name"]]["configMap"]["name"]
            assert configmaps[source]["data"][key] == live


def test_without_a_preview_the_idle_workers_are_scaled_to_zero() -> None:
    view = by_key(render((BLUE_LIVE,), (*FIXED_SECRETS, "previewReplicas=0")))
    workers = _worker_pods(view)
    assert workers["notify-worker-blue"]["spec"]["replicas"] == 2
    assert workers["notify-worker-green"]["spec"]["replicas"] == 0
