from __future__ import annotations

import pytest

import blueprint.diag.v1.diag_pb2  # noqa: F401  (registers the descriptors)
from blueprint.mesh.methods import is_idempotent


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/blueprint.diag.v1.Diagnostics/Echo", True),  # NO_SIDE_EFFECTS
        ("/blueprint.diag.v1.Diagnostics/Work", True),  # IDEMPOTENT
        ("/blueprint.diag.v1.Diagnostics/Nope", False),
        ("/unknown.v1.Service/Echo", False),
        ("garbage", False),
    ],
)
def test_idempotency_comes_from_the_proto_options(path: str, expected: bool) -> None:
    assert is_idempotent(path) is expected
