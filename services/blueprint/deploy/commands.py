"""The actions of `blueprint rollout`: read the release, plan, carry out, report.

Each action reads the release afresh, asks `plan` what to do (which may
refuse), and has the runner do it; nothing here decides anything itself.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from blueprint.deploy import plan
from blueprint.deploy.plan import RolloutRefused, Verification
from blueprint.deploy.runner import CommandFailed, Runner, Tools
from blueprint.deploy.state import COLORS, ReleaseError, ReleaseState

EXIT_FAILED = 1


def run(args: argparse.Namespace) -> int:
    def out(line: str) -> None:
        print(line, flush=True)

    runner = Runner(
        Tools(
            helm=args.helm,
            kubectl=args.kubectl,
            release=args.release,
            chart=args.chart,
            namespace=args.namespace,
            wait_seconds=args.timeout,
        ),
        say=out,
    )
    action = ACTIONS["rollback" if args.action == "abort" else args.action]
    try:
        return action(runner, args)
    except (RolloutRefused, ReleaseError, CommandFailed) as error:
        print(f"blueprint rollout {args.action}: {error}", file=sys.stderr)
        return EXIT_FAILED


def _status(runner: Runner, args: argparse.Namespace) -> int:
    runner.say(describe(runner.read_state(), runner.tools.release))
    return 0


def _deploy(runner: Runner, args: argparse.Namespace) -> int:
    state = runner.read_state()
    runner.apply(state, plan.deploy(state, args.tag))
    runner.say(f"{state.idle} runs {args.tag}; next: blueprint rollout verify")
    return 0


def _verify(runner: Runner, args: argparse.Namespace) -> int:
    verification = runner.verify(runner.read_state())
    runner.say(describe_verification(verification))
    return 0 if verification.passed else EXIT_FAILED


def _promote(runner: Runner, args: argparse.Namespace) -> int:
    state = runner.read_state()
    verification = runner.verify(state)
    runner.say(describe_verification(verification))
    runner.apply(state, plan.promote(state, verification))
    runner.say(f"{state.idle} is live; next: blueprint rollout scale-down (or rollback)")
    return 0


def _scale_down(runner: Runner, args: argparse.Namespace) -> int:
    plan.scale_down(runner.read_state())  # refuse now rather than after the wait
    if args.after > 0:
        runner.say(f"keeping the old colour warm for {args.after:g}s")
        runner.sleep(args.after)
    state = runner.read_state()  # it may have changed while we waited
    runner.apply(state, plan.scale_down(state))
    return 0


def _rollback(runner: Runner, args: argparse.Namespace) -> int:
    state = runner.read_state()
    steps = plan.rollback(state, settle_seconds=args.settle)
    runner.apply(state, steps)
    runner.say(f"rolled back: {steps[-1].record.old} is live")
    return 0


ACTIONS: dict[str, Callable[[Runner, argparse.Namespace], int]] = {
    "status": _status,
    "deploy": _deploy,
    "verify": _verify,
    "promote": _promote,
    "scale-down": _scale_down,
    "rollback": _rollback,
}


def describe(state: ReleaseState, release: str) -> str:
    lines = [
        f"release {release}: live {state.active} ({state.tags[state.active] or 'chart default'}),"
        f" idle {state.idle} ({state.tags[state.idle] or 'chart default'}),"
        f" previewReplicas {state.preview_replicas}",
        f"rollout: {state.record.describe() if state.record else 'none recorded'}",
        "",
        f"{'SERVICE':<16}" + "".join(f"{color.upper():<24}" for color in COLORS),
    ]
    for service in state.services:
        cells = []
        for color in COLORS:
            found = state.deployment(service, color)
            cell = "absent" if found is None else f"{found.ready}/{found.desired} ready"
            cells.append(cell + (" (live)" if color == state.active else ""))
        lines.append(f"{service:<16}" + "".join(f"{cell:<24}" for cell in cells))
    return "\n".join(lines)


def describe_verification(verification: Verification) -> str:
    lines = [f"verify {verification.color} ({verification.tag or 'chart default'}):"]
    for check in verification.checks:
        verdict = "ok" if not check.problems else "; ".join(check.problems)
        lines.append(f"  {check.service}: {verdict}")
    lines.append("passed" if verification.passed else "FAILED")
    return "\n".join(lines)
