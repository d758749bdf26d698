"""pyproject.toml declares what mdgen imports, in ranges that the exact lock (requirements.txt) satisfies."""
import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def declared() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    return {canonicalize_name(r.name): r for r in reqs}


def imported_top_level_modules() -> set[str]:
    names = set()
    for f in (REPO / "src/mdgen").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"mdgen", "__future__"}


def test_every_third_party_import_is_a_declared_runtime_dependency():
    runtime = {canonicalize_name(Requirement(r).name) for r in
               tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    dists = packages_distributions()  # import name -> distributions that provide it (PIL -> Pillow)
    missing = {}
    for module in sorted(imported_top_level_modules()):
        provided_by = {canonicalize_name(d) for d in dists.get(module, [module])}
        if not provided_by & runtime:
            missing[module] = sorted(provided_by)
    assert not missing, f"src/mdgen imports these, but pyproject.toml [project] dependencies lacks them: {missing}"


def test_the_lock_satisfies_the_declared_ranges():
    ranges = declared()
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            pins[canonicalize_name(req.name)] = next(iter(req.specifier)).version
    unpinned = sorted(set(ranges) - set(pins))
    assert not unpinned, f"requirements.txt pins no version of {unpinned}"
    outside = {name: (pins[name], str(req.specifier)) for name, req in ranges.items()
               if not req.specifier.contains(pins[name], prereleases=True)}
    assert not outside, f"requirements.txt pins versions outside pyproject.toml's ranges: {outside}"
