"""Releases as helm and kubectl print them, and fake `helm`/`kubectl` binaries.

The fakes are small scripts put first on PATH: each records its argv and
answers from canned rules, so a test can check the exact commands a rollout
issues without a cluster (none exists here).
"""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blueprint.deploy.state import Color, RolloutRecord

OLD_TAG, NEW_TAG = "1.0.0", "1.1.0"
IMAGE = "registry.example/blueprint"


def release_values(
    *,
    active: Color = "blue",
    tags: dict[Color, str] | None = None,
    preview: int = 0,
    services: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """`helm get values --all -o json` of a Blueprint release."""
    return {
        "activeColor": active,
        "colors": {c: {"tag": (tags or {"blue": OLD_TAG}).get(c, "")} for c in ("blue", "green")},
        "previewReplicas": preview,
        "defaults": {"replicas": 2, "resources": {}},
        "services": services
        if services is not None
        else {"diag": {"enabled": True, "replicas": 3}, "gateway": {"enabled": True}},
    }


def deployment(
    name: str,
    desired: int,
    *,
    ready: int | None = None,
    tag: str = OLD_TAG,
    updated: int | None = None,
    total: int | None = None,
    stale: bool = False,
) -> dict[str, Any]:
    """A Deployment as `kubectl get -o json` shows it; fully rolled out unless told."""
    ready = desired if ready is None else ready
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "generation": 4},
        "spec": {
            "replicas": desired,
            "template": {"spec": {"containers": [{"name": "app", "image": f"{IMAGE}:{tag}"}]}},
        },
        "status": {
            "observedGeneration": 3 if stale else 4,
            "replicas": desired if total is None else total,
            "readyReplicas": ready,
            "updatedReplicas": desired if updated is None else updated,
            "availableReplicas": ready,
        },
    }


def colour_deployments(color: Color, replicas: dict[str, int], tag: str) -> list[dict[str, Any]]:
    return [deployment(f"{svc}-{color}", n, tag=tag) for svc, n in replicas.items()]


CHART = "blueprint-0.3.0"  # what `helm history` shows for revisions made with the chart here


def history(
    *records: RolloutRecord | str, failed: int = 0, pending: int = 0, chart: str = CHART
) -> list[dict[str, Any]]:
    """`helm history -o json`: revision 1 is the install, then one per record.

    The newest revision is deployed and the others superseded, unless the last
    `failed` ones failed (or the last `pending` are `pending-upgrade`): then the
    newest revision before them is the deployed one, as helm leaves it.
    """
    descriptions = [
        "Install complete",
        *(r if isinstance(r, str) else r.describe() for r in records),
    ]
    unfinished = failed + pending
    deployed = len(descriptions) - unfinished

    def status(n: int) -> str:
        if n > deployed:
            return "failed" if failed else "pending-upgrade"
        return "deployed" if n == deployed else "superseded"

    return [
        {
            "revision": n,
            "updated": "2026-01-01T00:00:00Z",
            "status": status(n),
            "chart": chart,
            "app_version": OLD_TAG,
            "description": description,
        }
        for n, description in enumerate(descriptions, start=1)
    ]


def deployed_revision(revisions: list[dict[str, Any]]) -> int:
    return max(int(r["revision"]) for r in revisions if r["status"] == "deployed")


_SCRIPT = """#!{python}
import json, os, sys, time
name = os.path.basename(sys.argv[0])
with open(os.environ["FAKE_TOOLS_LOG"], "a") as log:
    log.write(json.dumps([name, *sys.argv[1:]]) + "\\n")
with open(os.environ["FAKE_TOOLS_RULES"]) as rules:
    for rule in json.load(rules):
        # A token matches an argument, or one part of a comma-separated label selector.
        parts = {{part for arg in sys.argv[1:] for part in (arg, *arg.split(","))}}
        if rule["tool"] == name and all(token in parts for token in rule["match"]):
            sys.stdout.write(rule.get("stdout", ""))
            sys.stdout.flush()
            sys.stderr.write(rule.get("stderr", ""))
            if rule.get("hang"):
                time.sleep(3600)  # port-forward: runs until terminated
            sys.exit(rule.get("exit", 0))
"""


@dataclass
class FakeTools:
    """`helm` and `kubectl` in `bin_dir`, answering from `rules`, logging to `log`."""

    bin_dir: Path
    log: Path
    rules_path: Path
    rules: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def install(cls, root: Path) -> FakeTools:
        bin_dir = root / "bin"
        bin_dir.mkdir()
        for name in ("helm", "kubectl"):
            path = bin_dir / name
            path.write_text(_SCRIPT.format(python=sys.executable))
            path.chmod(path.stat().st_mode | stat.S_IXUSR)
        tools = cls(bin_dir, root / "calls.jsonl", root / "rules.json")
        tools.save()
        return tools

    def env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "FAKE_TOOLS_LOG": str(self.log),
            "FAKE_TOOLS_RULES": str(self.rules_path),
        }

    def answer(
        self, tool: str, match: list[str], stdout: Any = "", *, first: bool = False, **options: Any
    ) -> None:
        """The first matching rule answers: add specific rules before general ones
        (or with `first`, ahead of every rule so far)."""
        text = stdout if isinstance(stdout, str) else json.dumps(stdout)
        rule = {"tool": tool, "match": match, "stdout": text, **options}
        self.rules.insert(0 if first else len(self.rules), rule)
        self.save()

    def release(
        self,
        values: dict[str, Any],
        deployments: list[dict[str, Any]],
        revisions: list[dict[str, Any]] | None = None,
        *,
        latest_values: dict[str, Any] | None = None,
    ) -> None:
        """`values` are the deployed revision's; `latest_values` a newer, failed one's."""
        revisions = revisions if revisions is not None else history()
        deployed = str(deployed_revision(revisions))
        self.answer("helm", ["get", "values", "--revision", deployed], values)
        self.answer("helm", ["get", "values"], latest_values or values)
        self.answer("helm", ["history"], revisions)
        self.answer("kubectl", ["get", "deployment"], {"kind": "List", "items": deployments})
        self.answer(
            "helm", ["show", "chart"], f"name: blueprint\nversion: {CHART.split('-')[-1]}\n"
        )

    def save(self) -> None:
        self.rules_path.write_text(json.dumps(self.rules))

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def upgrades(self) -> list[list[str]]:
        return [call for call in self.calls() if call[:2] == ["helm", "upgrade"]]


def set_flags(argv: list[str]) -> list[tuple[str, str]]:
    """The value overrides of a `helm upgrade`: (flag, key=value) pairs."""
    return [
        (flag, argv[i + 1])
        for i, flag in enumerate(argv)
        if flag in ("--set", "--set-string", "--set-json", "--set-file", "-f", "--values")
    ]
