"""Package layout: stages are thin scripts over the library, and none imports another."""
from __future__ import annotations

import ast
from pathlib import Path

from mdgen import cli

SRC = Path(__file__).resolve().parents[1] / "src" / "mdgen"


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_no_module_imports_a_stage():
    offenders = {str(f.relative_to(SRC)): sorted(m for m in imported_modules(f) if m.startswith("mdgen.stages"))
                 for f in SRC.rglob("*.py")}
    assert {f: m for f, m in offenders.items() if m} == {}


def test_stages_are_the_dvc_stages_and_tools_are_not():
    modules = {p.stem for p in (SRC / "stages").glob("*.py")} - {"__init__"}
    assert {m.rsplit(".", 1)[1] for m, _ in cli.STAGES.values()} == modules
    assert cli.COMMANDS["tokenizer-train"][0] == "mdgen.tools.tokenizer_train"
    assert (SRC / "templates" / "tokenizer_card.md").is_file()
