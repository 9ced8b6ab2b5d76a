"""`blueprint rollout`: blue-green cut-over of a Blueprint Helm release.

    blueprint rollout status
    blueprint rollout deploy 1.4.0@sha256:...  # the idle colour runs it at full size
    blueprint rollout deploy 1.4.0 -f new-settings.yaml   # and with these settings
    blueprint rollout verify           # every preview pod: health, services, a smoke call
    blueprint rollout promote          # verify again, switch activeColor, watch, undo on failure
    blueprint rollout scale-down       # after --after seconds, the old colour goes to 0
    blueprint rollout rollback         # (or abort) back to the old colour

Every step reads the release's deployed revision and refuses while a newer one
failed or is pending. Only `deploy` runs the chart's hooks (migrations).
Exit status: 0 done, 1 refused or failed (promote: also when its analysis failed
and it rolled back), 2 bad usage.
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
        "--timeout", type=_positive_int, default=600, metavar="SECONDS",
        help="for each helm upgrade (hooks included) and each Deployment to roll out (600)",
    )  # fmt: skip
    actions = rollout.add_subparsers(dest="action", required=True, metavar="ACTION")

    actions.add_parser("status", help="colours, tags, replicas and the rollout's phase")
    deploy = actions.add_parser(
        "deploy", help="run IMAGE on the idle colour, full size, workers paused; migrate"
    )
    deploy.add_argument("image", help="TAG@sha256:DIGEST (preferred) or TAG, e.g. 1.4.0")
    deploy.add_argument(
        "-f", "--values", action="append", default=[], metavar="FILE",
        help="values to deploy with (settings): the idle colour takes them, the live one not",
    )  # fmt: skip
    actions.add_parser("verify", help="check every preview pod: health, services, smoke call")
    promote = actions.add_parser(
        "promote", help="verify, make the idle colour live, watch it, roll back if it fails"
    )
    promote.add_argument(
        "--no-analysis", action="store_true",
        help="skip the post-promotion analysis (rollout.analysis in the values)",
    )  # fmt: skip
    promote.add_argument(
        "--allow-chart-change", action="store_true",
        help="promote with a chart other than the one the preview was deployed with",
    )  # fmt: skip
    promote.add_argument(
        "--settle", type=float, default=10.0, metavar="SECONDS",
        help="if the analysis fails: between switching back and scaling down (10)",
    )  # fmt: skip
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
