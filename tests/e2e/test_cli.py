"""The `blueprint` command as a user types it: bad input gets one clear line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.mesh import mesh_env, running

ONE_MIB = 1024 * 1024


def blueprint(
    *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "blueprint.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,  # a pipe, never the terminal: `call` without a body reads it
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


@pytest.fixture
def diag_env(redis_url: str, redis_prefix: str, log_dir: Path) -> Iterator[dict[str, str]]:
    """The environment of a shell that reaches one running diag replica."""
    env = mesh_env(redis_url, redis_prefix)
    with running("diag", 1, env, log_dir):
        yield env


@pytest.mark.redis
@pytest.mark.parametrize("how", ["@file", "stdin, no body", "stdin, -"])
def test_call_takes_a_request_past_the_argument_limit_from_a_file_or_stdin(
    diag_env: dict[str, str], tmp_path: Path, how: str
) -> None:
    body = json.dumps({"payload": "x" * ONE_MIB})  # beyond what one shell argument holds
    request_file = tmp_path / "request.json"
    request_file.write_text(body)
    if how == "@file":
        result = blueprint("call", "diag", "Echo", f"@{request_file}", env=diag_env)
    elif how == "stdin, no body":
        result = blueprint("call", "diag", "Echo", env=diag_env, stdin=body)
    else:
        result = blueprint("call", "diag", "Echo", "-", env=diag_env, stdin=body)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["payload"]) == ONE_MIB


@pytest.mark.redis
def test_call_with_empty_stdin_sends_an_empty_request(diag_env: dict[str, str]) -> None:
    result = blueprint("call", "diag", "Echo", env=diag_env, stdin="")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["payload"] == ""


def test_call_names_a_request_file_it_cannot_read(tmp_path: Path) -> None:
    result = blueprint("call", "diag", "Echo", f"@{tmp_path / 'missing.json'}")
    assert result.returncode == 2
    assert result.stderr.startswith("blueprint call: cannot read the request from ")
    assert "missing.json" in result.stderr and len(result.stderr.splitlines()) == 1


def _imported(*args: str, env: dict[str, str] | None = None) -> set[str]:
    """Every module `blueprint ARGS` imported (python -X importtime lists them)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "blueprint.cli", *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env=env or {k: v for k, v in os.environ.items() if not k.startswith("BLUEPRINT_")},
    )  # fmt: skip
    return {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and not line.rstrip().endswith("package")
    }


def _loaded(modules: set[str], *roots: str) -> set[str]:
    return {m for m in modules if any(m == r or m.startswith(f"{r}.") for r in roots)}


def test_help_loads_no_mesh_settings_grpc_database_or_cloud_client() -> None:
    modules = _imported("--help")
    assert "argparse" in modules  # the listing works
    heavy = ("grpc", "pydantic", "sqlalchemy", "alembic", "kubernetes", "opentelemetry", "redis")
    assert not _loaded(modules, *heavy)


@pytest.mark.redis
def test_call_loads_the_mesh_client_but_no_service_code_database_or_tracing_sdk(
    redis_url: str, redis_prefix: str
) -> None:
    # Nothing registered under this prefix: the call fails after its wait, having
    # imported all it would need to succeed.
    env = mesh_env(redis_url, redis_prefix)
    modules = _imported("call", "diag", "Echo", "{}", "--timeout", "0.2", env=env)
    assert {"blueprint.mesh.client", "blueprint.mesh.discovery.redis"} <= modules
    assert not _loaded(
        modules,
        "sqlalchemy",
        "alembic",
        "kubernetes",
        "opentelemetry.sdk.trace",  # redis-py itself loads opentelemetry.sdk.metrics
        "grpc_reflection.v1alpha",  # (grpc's own import loads the bare package)
        "blueprint.mesh.server",
        "blueprint.diag.service",
        "blueprint.shortener",
        "blueprint.infra.sql.database",
    )
