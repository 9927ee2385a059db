"""pyproject.toml's lower bounds and .ci/lowest-constraints.txt (what CI's lowest-versions stage
installs) name the same direct dependencies at the same versions, so neither is raised alone."""
from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.helpers import REPO

CONSTRAINTS = REPO / ".ci" / "lowest-constraints.txt"


def lower_bounds() -> dict[str, Version]:
    """Every direct dependency (main list and all extras) -> the version of its `>=` bound."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        lines += extra
    bounds: dict[str, Version] = {}
    for line in lines:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        lower = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert len(lower) == 1, f"pyproject.toml: {line!r} needs exactly one '>=' lower bound"
        assert name not in bounds, f"pyproject.toml names {req.name} twice"
        bounds[name] = lower[0]
    return bounds


def pins() -> dict[str, Version]:
    """Every `name==version` line of the constraints file (comments and blank lines skipped)."""
    pinned: dict[str, Version] = {}
    for number, raw in enumerate(CONSTRAINTS.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", \
            f"{CONSTRAINTS.name}:{number}: {raw!r} must be one 'name==version'"
        name = canonicalize_name(req.name)
        assert name not in pinned, f"{CONSTRAINTS.name}:{number}: {req.name} pinned twice"
        pinned[name] = Version(specs[0].version)
    return pinned


def test_constraints_pin_every_direct_dependency_at_its_lower_bound():
    bounds, pinned = lower_bounds(), pins()
    assert sorted(pinned) == sorted(bounds), (
        f"only in pyproject.toml: {sorted(set(bounds) - set(pinned))}; "
        f"only in {CONSTRAINTS.name}: {sorted(set(pinned) - set(bounds))}")
    differ = {name: (str(bounds[name]), str(pinned[name])) for name in bounds if bounds[name] != pinned[name]}
    assert not differ, f"pyproject.toml's '>=' bound vs {CONSTRAINTS.name}'s pin: {differ}"
