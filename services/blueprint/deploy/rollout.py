"""`blueprint rollout`: blue-green cut-over of a Blueprint Helm release.

    blueprint rollout status
    blueprint rollout deploy 1.4.0     # the idle colour runs 1.4.0 at full size
    blueprint rollout verify           # preview Services: health and a smoke call
    blueprint rollout promote          # verify again, then switch activeColor
    blueprint rollout scale-down       # after --after seconds, the old colour goes to 0
    blueprint rollout rollback         # (or abort) back to the old colour

Exit status: 0 done, 1 refused or failed (nothing further changed), 2 bad usage.
"""

from __future__ import annotations

import argparse
import os


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rollout` and its actions to the `blueprint` command's subparsers."""
    rollout = subparsers.add_parser(
        "rollout",
        help="blue-green rollout of a Helm release: deploy, verify, promote, roll back",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rollout.add_argument("--release", default="blueprint", help="Helm release (blueprint)")
    rollout.add_argument("-n", "--namespace", help="namespace (the kube context's)")
    rollout.add_argument("--chart", default="helm/blueprint", help="chart (helm/blueprint)")
    rollout.add_argument(
        "--helm", default=os.environ.get("BLUEPRINT_HELM", "helm"),
        help="helm binary (BLUEPRINT_HELM, else helm on PATH)",
    )  # fmt: skip
    rollout.add_argument(
        "--kubectl", default=os.environ.get("BLUEPRINT_KUBECTL", "kubectl"),
        help="kubectl binary (BLUEPRINT_KUBECTL, else kubectl on PATH)",
    )  # fmt: skip
    rollout.add_argument(
        "--timeout", type=_positive_int, default=300, metavar="SECONDS",
        help="for each Deployment to roll out (300)",
    )  # fmt: skip
    actions = rollout.add_subparsers(dest="action", required=True, metavar="ACTION")

    actions.add_parser("status", help="colours, tags, replicas and the rollout's phase")
    deploy = actions.add_parser("deploy", help="run TAG on the idle colour, full size")
    deploy.add_argument("tag", help="image tag, e.g. 1.4.0")
    actions.add_parser("verify", help="check the preview: ready, health, smoke call")
    actions.add_parser("promote", help="verify, then make the idle colour live")
    scale_down = actions.add_parser("scale-down", help="after a delay, scale the old colour to 0")
    scale_down.add_argument(
        "--after", type=float, default=60.0, metavar="SECONDS",
        help="keep the old colour warm for a quick rollback this long first (60)",
    )  # fmt: skip
    rollback = actions.add_parser(
        "rollback", aliases=["abort"], help="back to the old colour; scale the new one to 0"
    )
    rollback.add_argument(
        "--settle", type=float, default=10.0, metavar="SECONDS",
        help="between switching back and scaling the failed colour down (10)",
    )  # fmt: skip
    rollout.set_defaults(run=run)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def run(args: argparse.Namespace) -> int:
    # Imported here: `blueprint call` and friends should not pay for gRPC probes and helm.
    from blueprint.deploy import commands

    return commands.run(args)
