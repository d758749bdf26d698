"""dvc.yaml's code deps cannot go stale: each `mdgen <command>` stage lists exactly the src/mdgen files its entry
module (cli.STAGES) imports, transitively, found statically with `ast`. A missing file means an edit does not
rerun the stage; an extra one means an unrelated edit reruns it (training for an evaluation change). cli.py only
dispatches to the entry module, so it is no stage's dep. On failure, fix dvc.yaml from the message.
"""
from __future__ import annotations

import ast
from collections import deque
from functools import lru_cache
from pathlib import Path

import yaml

from mdgen.cli import STAGES

REPO = Path(__file__).resolve().parents[1]
PKG = "mdgen"


def module_file(src: Path, mod: str) -> Path | None:
    base = src.joinpath(*mod.split("."))
    return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()), None)


@lru_cache(maxsize=None)
def parse(f: Path) -> ast.Module:
    return ast.parse(f.read_text(), str(f))


def with_packages(src: Path, name: str) -> set[str]:
    """`name` and the packages Python imports on the way to it, those that exist as mdgen modules."""
    parts = name.split(".")
    if parts[0] != PKG:
        return set()  # numpy, os, a `mdgenx`...: not ours
    return {m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if module_file(src, m)}


def imports(src: Path, mod: str) -> set[str]:
    """mdgen modules `mod` imports anywhere (module level or inside functions), relative imports resolved."""
    f = module_file(src, mod)
    package = mod if f.name == "__init__.py" else mod.rpartition(".")[0]
    names = set()
    for node in ast.walk(parse(f)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # `from mdgen import x`: x may be a module
    return set().union(*(with_packages(src, n) for n in names)) - {mod}


def closure(entry: str, src: Path) -> dict[str, str | None]:
    """BFS from `entry`: module -> the module that first imported it (None for `entry`), for import chains."""
    parent: dict[str, str | None] = {entry: None}
    todo = deque([entry])
    while todo:
        mod = todo.popleft()
        for dep in sorted(imports(src, mod) | with_packages(src, mod)):
            if dep not in parent:
                parent[dep] = mod
                todo.append(dep)
    return parent


def trivial(f: Path) -> bool:
    """An __init__.py that runs nothing at import changes no stage's output, so it is not a dep: listing it would
    rerun every stage on a version bump. Such a file holds only a docstring, assignments of literals (mdgen's
    `__version__`, `__all__`, its table of lazy exports) and PEP 562 module hooks, `__getattr__` / `__dir__`
    (today: mdgen's, which imports `mdgen.generator` when a notebook asks for `mdgen.SpectrogramGenerator`; an
    empty mdgen/stages/). A hook runs only when an attribute lookup on the package misses, which no stage makes:
    code in mdgen imports from the defining module (tests/test_api.py checks it), which this closure follows.
    Once an __init__ imports at module level or defines anything else, it counts like any other module."""
    def literal(node: ast.AST) -> bool:
        try:
            ast.literal_eval(node)
        except (ValueError, TypeError):
            return False
        return True

    return f.name == "__init__.py" and all(
        (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
        or (isinstance(s, ast.Assign) and literal(s.value))
        or (isinstance(s, ast.FunctionDef) and s.name in ("__getattr__", "__dir__") and not s.decorator_list)
        for s in parse(f).body)


def data_files(f: Path) -> set[Path]:
    """What a module reads next to itself: `Path(__file__).parent / "templates" / "x.html"` (constant parts)."""
    tree = parse(f)
    inner = {id(n.left) for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in inner:
            continue  # only the longest `a / "b" / "c"`
        parts = []
        while isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant):
            parts.insert(0, str(node.right.value))
            node = node.left
        ups = 0
        while isinstance(node, ast.Attribute) and node.attr == "parent":
            ups, node = ups + 1, node.value
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("resolve", "absolute"):
            node = node.func.value  # Path(__file__).resolve().parent
        if parts and ups and isinstance(node, ast.Call) and [getattr(a, "id", None) for a in node.args] == ["__file__"]:
            if (p := f.parents[ups - 1].joinpath(*parts)).exists():
                out.add(p)
    return out


def code_deps(entry: str, src: Path) -> dict[str, str]:
    """Repo-relative path -> why it is needed ("imported via a -> b -> c"), for every file of the closure."""
    parent = closure(entry, src)
    out = {}
    for mod in parent:
        chain, m = [], mod
        while m is not None:
            chain, m = [m] + chain, parent[m]
        f = module_file(src, mod)
        if not trivial(f):
            out[f.relative_to(src.parent).as_posix()] = "imported via " + " -> ".join(chain)
        for p in data_files(f):
            out[p.relative_to(src.parent).as_posix()] = f"read by {mod}, imported via " + " -> ".join(chain)
    return out


def test_closure_on_a_fake_package(tmp_path):
    files = {"__init__.py": '"""doc."""\n__version__ = "0"\n', "stages/__init__.py": "import numpy as np\n",
             "stages/entry.py": "import os\nimport mdgenx\nfrom mdgen import a\n\n"
                                "def main():\n    from mdgen.b import t\n",
             "a.py": "import os.path\nfrom . import c\n", "b.py": "from pathlib import Path\n"
             "t = (Path(__file__).parent / 'templates' / 't.txt').read_text()\n",
             "c.py": "", "unused.py": "import mdgen.a\n", "templates/t.txt": "hi"}
    for name, text in files.items():
        (tmp_path / "src/mdgen" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src/mdgen" / name).write_text(text)
    assert set(closure("mdgen.stages.entry", tmp_path / "src")) == {
        "mdgen", "mdgen.stages", "mdgen.stages.entry", "mdgen.a", "mdgen.b", "mdgen.c"}
    deps = code_deps("mdgen.stages.entry", tmp_path / "src")
    assert sorted(deps) == ["src/mdgen/a.py", "src/mdgen/b.py", "src/mdgen/c.py", "src/mdgen/stages/__init__.py",
                            "src/mdgen/stages/entry.py", "src/mdgen/templates/t.txt"]  # not the trivial __init__
    assert deps["src/mdgen/c.py"] == "imported via mdgen.stages.entry -> mdgen.a -> mdgen.c"


def test_every_stage_lists_exactly_its_code():
    stages = {name: spec for path in ("dvc.yaml",)
              for name, spec in yaml.safe_load((REPO / path).read_text())["stages"].items()}
    mdgen_stages = {k: s for k, s in stages.items() if str(s.get("cmd", "")).split()[:1] == [PKG]}
    assert mdgen_stages, "no `mdgen <command>` stage in dvc.yaml"
    problems = []
    for stage, spec in mdgen_stages.items():
        command = spec["cmd"].split()[1]
        assert command in STAGES, f"stage {stage!r}: `{spec['cmd']}` is not a command of mdgen.cli.STAGES"
        entry = STAGES[command][0]
        need = code_deps(entry, REPO / "src")
        assert module_file(REPO / "src", entry).relative_to(REPO).as_posix() in need, f"{stage}: empty closure"
        deps = {d.rstrip("/") for d in spec.get("deps", []) if isinstance(d, str) and "${" not in d}
        problems += [f"stage {stage!r} misses {f} ({why})" for f, why in sorted(need.items()) if f not in deps]
        problems += [f"stage {stage!r} lists {d}, which {entry} never imports or reads" for d in sorted(deps)
                     if (d == f"src/{PKG}" or d.startswith(f"src/{PKG}/")) and d not in need]
    assert not problems, "dvc.yaml code deps out of date:\n  " + "\n  ".join(problems)


def test_every_stage_reads_exactly_the_params_dvc_yaml_lists():
    # a stage reads its KEYS (`mdgen.params.read`: a section comes whole, a key alone), and DVC reruns it
    # when one of them changes only if dvc.yaml lists the same: no more (spurious reruns), no fewer (stale outputs)
    import importlib

    stages = {name: spec for path in ("dvc.yaml",)
              for name, spec in yaml.safe_load((REPO / path).read_text())["stages"].items()}
    problems = []
    for stage, spec in stages.items():
        command = str(spec.get("cmd", "")).split()
        if command[:1] != [PKG]:
            continue
        keys = importlib.import_module(STAGES[command[1]][0]).KEYS
        if sorted(keys) != sorted(spec.get("params", [])):
            problems.append(f"stage {stage!r}: reads {keys}, dvc.yaml lists {spec.get('params', [])}")
    assert not problems, "\n  ".join(problems)
