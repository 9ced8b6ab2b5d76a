"""The `blueprint` command as a user types it: bad input gets one clear line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest


def blueprint(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "blueprint.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env or {k: v for k, v in os.environ.items() if not k.startswith("BLUEPRINT_")},
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("diag", "Echo", '{"payload": "hi"'), "malformed JSON"),
        (("diag", "Echo", "[1, 2]"), "must be a JSON object"),
        (("diag", "Echo", '{"payloud": "hi"}'), 'no field named "payloud"'),
        (("diag", "Echo", '{"payload": 5}'), "payload"),
        (("diag", "Shout", "{}"), "unknown method 'Shout' of service 'diag'; methods: Echo"),
        (("nosuch", "Echo", "{}"), "unknown service 'nosuch'; services: diag"),
        (("diag", "Echo", "{}", "-H", "novalue"), "is not NAME=VALUE"),
    ],
)
def test_call_rejects_bad_input_with_one_clear_line(args: tuple[str, ...], expected: str) -> None:
    result = blueprint("call", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("blueprint call: ")
    assert expected in lines[0]
    assert result.stdout == ""


def test_serve_unknown_service_names_the_known_ones() -> None:
    result = blueprint("serve", "nosuch")
    assert result.returncode == 2
    assert "unknown service 'nosuch'; services: diag" in result.stderr


def test_bad_settings_are_reported_by_name() -> None:
    env = dict(os.environ, BLUEPRINT_BALANCER="fastest", BLUEPRINT_REPLICAS="0")
    result = blueprint("status", env=env)
    assert result.returncode != 0
    assert "BLUEPRINT_BALANCER" in result.stderr and "BLUEPRINT_REPLICAS" in result.stderr


def test_serve_on_a_taken_port_says_so_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BLUEPRINT_")}
        env.update(BLUEPRINT_DISCOVERY="static", BLUEPRINT_PORT=str(taken.getsockname()[1]))
        result = blueprint("serve", "diag", env=env)
    assert result.returncode == 1
    assert "blueprint serve: cannot listen on 127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr
