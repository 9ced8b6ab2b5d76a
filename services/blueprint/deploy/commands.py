"""The actions of `blueprint rollout`: read the release, plan, carry out, report.

Each action reads the release afresh, asks `plan` what to do (which may
refuse), and has the runner do it; nothing here decides anything itself.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from blueprint.deploy import checks, plan
from blueprint.deploy.analysis import Analysis
from blueprint.deploy.plan import RolloutRefused, Verification
from blueprint.deploy.runner import CommandFailed, Runner, Tools
from blueprint.deploy.state import COLORS, Color, ReleaseError, ReleaseState

EXIT_FAILED = 1


class RolledBack(Exception):
    """The promoted colour failed its analysis and the rollout undid the promotion."""


def run(args: argparse.Namespace, *, runner: Runner | None = None) -> int:
    def out(line: str) -> None:
        print(line, flush=True)

    runner = runner or Runner(
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
    except (RolloutRefused, ReleaseError, CommandFailed, RolledBack) as error:
        print(f"blueprint rollout {args.action}: {error}", file=sys.stderr)
        return EXIT_FAILED


def _status(runner: Runner, args: argparse.Namespace) -> int:
    runner.say(describe(runner.read_state(), runner.tools.release))
    return 0


def _values_files(paths: list[str]) -> dict[str, Mapping[str, Any]]:
    found: dict[str, Mapping[str, Any]] = {}
    for path in paths:
        try:
            content = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as error:
            raise RolloutRefused(f"cannot read values file {path}: {error}") from error
        if not isinstance(content, dict):
            raise RolloutRefused(f"values file {path} is not a YAML mapping")
        found[path] = content
    return found


def _deploy(runner: Runner, args: argparse.Namespace) -> int:
    state = runner.read_state()
    steps = plan.deploy(state, args.image, values_files=_values_files(args.values))
    advice = plan.digest_advice(args.image)
    if advice:
        runner.say(f"note: {advice}")
    runner.apply(state, steps)
    runner.say(f"{state.idle} runs {args.image}; next: blueprint rollout verify")
    return 0


def _verify(runner: Runner, args: argparse.Namespace) -> int:
    verification = checks.verify_preview(runner, runner.read_state())
    runner.say(describe_verification(verification))
    return 0 if verification.passed else EXIT_FAILED


def _promote(runner: Runner, args: argparse.Namespace) -> int:
    state = runner.read_state()
    plan.check_acting(state)
    verification = checks.verify_preview(runner, state)
    runner.say(describe_verification(verification))
    steps = plan.promote(
        state,
        verification,
        chart=runner.chart_version(),
        allow_chart_change=args.allow_chart_change,
    )
    runner.apply(state, steps)
    new, old = state.idle, state.active
    runner.say(f"{new} is live")
    if args.no_analysis or not state.analysis.enabled:
        runner.say("next: blueprint rollout scale-down (or rollback)")
        return 0
    analysis = checks.analyse(runner, state, new)
    runner.say(describe_analysis(analysis))
    if analysis.passed:
        runner.say("next: blueprint rollout scale-down (or rollback)")
        return 0
    promoted = runner.read_state()
    runner.apply(promoted, plan.rollback(promoted, settle_seconds=args.settle))
    raise RolledBack(
        f"{new} failed its post-promotion analysis ({'; '.join(analysis.failures())}); "
        f"rolled back: {old} is live"
    )


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
    def colour(color: Color) -> str:
        pinned = ", settings pinned" if color in state.pinned else ""
        return f"{color} ({state.tags[color] or 'chart default'}{pinned})"

    lines = [
        f"release {release}: live {colour(state.active)}, idle {colour(state.idle)},"
        f" previewReplicas {state.preview_replicas}",
        f"rollout: {_record(state)}",
    ]
    if state.halted:
        lines.append(f"steps refuse: {state.halted}")
    lines += ["", f"{'WORKLOAD':<24}" + "".join(f"{color.upper():<24}" for color in COLORS)]
    for workload in [*state.services, *state.worker_workloads]:
        cells = []
        for color in COLORS:
            found = state.deployment(workload, color)
            cell = "absent" if found is None else f"{found.ready}/{found.desired} ready"
            cells.append(cell + (" (live)" if color == state.active else ""))
        lines.append(f"{workload:<24}" + "".join(f"{cell:<24}" for cell in cells))
    return "\n".join(lines)


def _record(state: ReleaseState) -> str:
    record = state.record
    if record is None:
        return "none recorded"
    return record.describe() + (f" (chart {record.chart})" if record.chart else "")


def describe_verification(verification: Verification) -> str:
    lines = [f"verify {verification.color} ({verification.tag or 'chart default'}):"]
    for check in verification.checks:
        if check.problems:
            verdict = "; ".join(check.problems)
        else:
            verdict = f"ok ({check.note})" if check.note else "ok"
        lines.append(f"  {check.service}: {verdict}")
    lines.append("passed" if verification.passed else "FAILED")
    return "\n".join(lines)


def describe_analysis(analysis: Analysis) -> str:
    lines = [f"analysis of {analysis.color} over {analysis.window_seconds:g}s:"]
    lines += [f"  {verdict.describe()}" for verdict in analysis.verdicts]
    lines += [f"  {failure}" for failure in analysis.failures()]
    lines.append("passed" if analysis.passed else "FAILED")
    return "\n".join(lines)
