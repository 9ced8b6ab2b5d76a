"""Children started by `spawn` die with their parent (Linux), set without a preexec_fn."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from blueprint.local.processes import spawn

# Prints the signal the kernel will send this process when its parent dies.
_REPORT_PDEATHSIG = (
    "import ctypes; libc = ctypes.CDLL(None); sig = ctypes.c_int(); "
    "libc.prctl(2, ctypes.byref(sig)); print(sig.value)"  # 2: PR_GET_PDEATHSIG
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_spawned_child_gets_sigterm_when_its_parent_dies(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    child = spawn([sys.executable, "-c", _REPORT_PDEATHSIG], {}, log)
    assert child.wait(timeout=60) == 0
    assert log.read_text().strip() == "15"  # SIGTERM
