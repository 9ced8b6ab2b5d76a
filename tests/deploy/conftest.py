"""tests/deploy checks the chart's rendered output with the real helm.

`make deploy-check` installs helm and runs these with BLUEPRINT_DEPLOY_CHECK=1,
where a missing helm is an error. In a plain `make test` without helm they are
skipped, saying why.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from chart_render import helm_binary

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if helm_binary():
        return
    if os.environ.get("BLUEPRINT_DEPLOY_CHECK"):
        raise pytest.UsageError("helm is not installed: run scripts/deploy/install_tools.sh")
    skip = pytest.mark.skip(reason="helm not installed; `make deploy-check` installs and runs it")
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(skip)
