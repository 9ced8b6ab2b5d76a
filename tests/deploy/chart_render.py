"""Render helm/blueprint with the real helm and read the output strictly.

tests/deploy runs under `make deploy-check`, which installs helm into .tools/;
the `HELM` environment variable names another binary.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "blueprint"
CI_VALUES = sorted(CHART.glob("ci/*-values.yaml"))
NAMESPACE = "blueprint"
KUBE_VERSION = "1.35.0"
# Deterministic renders: without these the chart generates random passwords.
FIXED_SECRETS = (
    "redis.auth.existingSecret=blueprint-redis",
    "postgresql.auth.existingSecret=blueprint-postgresql",
)

Doc = dict[str, Any]


def helm_binary() -> str | None:
    for candidate in (os.environ.get("HELM"), str(ROOT / ".tools" / "bin" / "helm")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("helm")


class _StrictLoader(yaml.SafeLoader):
    """A mapping with the same key twice is an error, not "the last one wins"."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def parse(text: str) -> list[Doc]:
    return [doc for doc in yaml.load_all(text, Loader=_StrictLoader) if doc]


def _command(
    values: Iterable[str | Path],
    sets: Iterable[str],
    set_strings: Iterable[str],
    extra: Iterable[str],
) -> list[str]:
    helm = helm_binary()
    assert helm, "helm is not installed: make deploy-check installs it into .tools/"
    command = [helm, "template", "blueprint", str(CHART), "--namespace", NAMESPACE]
    command += ["--kube-version", KUBE_VERSION]
    for path in values:
        command += ["-f", str(path)]
    for item in sets:
        command += ["--set", item]
    for item in set_strings:
        command += ["--set-string", item]
    return command + list(extra)


@functools.cache
def render(
    values: tuple[str | Path, ...] = (),
    sets: tuple[str, ...] = (),
    set_strings: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
) -> tuple[Doc, ...]:
    """The objects `helm template` renders (test hooks included)."""
    result = subprocess.run(
        _command(values, sets, set_strings, extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(parse(result.stdout))


def render_error(
    sets: Iterable[str] = (), set_strings: Iterable[str] = (), values: Iterable[Path] = ()
) -> str:
    """helm's error output for values that must be refused."""
    result = subprocess.run(
        _command(values, sets, set_strings, ()),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0, f"helm accepted {list(sets) + list(set_strings)}"
    return result.stderr


def of_kind(docs: Iterable[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_spec(doc: Doc) -> Doc:
    kind = doc["kind"]
    if kind == "Pod":
        return doc["spec"]
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def workloads(docs: Iterable[Doc]) -> Iterator[Doc]:
    kinds = {"Deployment", "StatefulSet", "CronJob", "Job", "Pod"}
    return (d for d in docs if d["kind"] in kinds)


def container_env(container: Doc, docs: Iterable[Doc]) -> dict[str, str]:
    """Plain env values of a container, its ConfigMaps (envFrom) included."""
    configmaps = of_kind(docs, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    return env
