"""PodDisruptionBudgets protect the live colour without ever blocking a node drain.

The arithmetic is the disruption controller's (pkg/controller/disruption): a budget
allows `currentHealthy - desiredHealthy` evictions, where desiredHealthy is
minAvailable (a percentage of the expected pods, rounded up) or expected pods
minus maxUnavailable (a percentage rounded up). With 1 replica, minAvailable 1
allows none: every eviction is refused and `kubectl drain` waits for ever.
"""

from __future__ import annotations

import math

import pytest
from chart_render import CHART, CI_VALUES, FIXED_SECRETS, Doc, of_kind, render

SINGLE = CHART / "ci" / "single-replica-values.yaml"


def _scaled(value: int | str, total: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(int(value[:-1]) * total / 100)
    return int(value)


def allowed_disruptions(pdb: Doc, healthy: int) -> int:
    """Evictions the budget allows while `healthy` pods of `healthy` expected are ready."""
    spec = pdb["spec"]
    if spec.get("maxUnavailable") is not None:
        desired = max(healthy - _scaled(spec["maxUnavailable"], healthy), 0)
    else:
        desired = _scaled(spec["minAvailable"], healthy)
    return max(healthy - desired, 0)


def guarded(docs: tuple[Doc, ...]) -> list[tuple[Doc, Doc]]:
    """(PDB, the Deployment whose pods it selects) for every budget."""
    deployments = of_kind(docs, "Deployment").values()
    pairs = []
    for pdb in of_kind(docs, "PodDisruptionBudget").values():
        selector = pdb["spec"]["selector"]["matchLabels"]
        [target] = [
            d
            for d in deployments
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        pairs.append((pdb, target))
    return pairs


def test_a_one_replica_workload_can_be_drained() -> None:
    docs = render((SINGLE,), FIXED_SECRETS)
    pairs = guarded(docs)
    assert pairs, "no PodDisruptionBudget rendered"
    for pdb, deployment in pairs:
        assert deployment["spec"]["replicas"] == 1
        assert allowed_disruptions(pdb, 1) == 1, pdb["metadata"]["name"]


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name.removesuffix("-values.yaml"))
def test_every_budget_allows_an_eviction_and_keeps_a_pod_when_there_are_two(values: object) -> None:
    for pdb, deployment in guarded(render((values,), FIXED_SECRETS)):
        name = pdb["metadata"]["name"]
        spec = pdb["spec"]
        assert (spec.get("minAvailable") is None) != (spec.get("maxUnavailable") is None), name
        replicas = deployment["spec"]["replicas"]
        assert allowed_disruptions(pdb, replicas) >= 1, name
        if replicas >= 2:
            assert replicas - allowed_disruptions(pdb, replicas) >= 1, name


def test_a_budget_that_would_refuse_every_eviction_is_not_rendered() -> None:
    docs = render(
        (SINGLE,),
        (*FIXED_SECRETS, "defaults.pdb.maxUnavailable=null", "defaults.pdb.minAvailable=1"),
    )
    assert of_kind(docs, "PodDisruptionBudget") == {}
    two = render(
        (SINGLE,),
        (
            *FIXED_SECRETS,
            "defaults.pdb.maxUnavailable=null",
            "defaults.pdb.minAvailable=1",
            "services.diag.replicas=2",
        ),
    )
    assert set(of_kind(two, "PodDisruptionBudget")) == {"diag"}
