#!/usr/bin/env python3
"""CI's reproduction check, run after `dvc repro` in a clean clone: the workspace's dvc.lock and
metrics/evaluate.json against the committed ones (git HEAD) and data/reference/default_run.json.
Exits 1, naming each failure, when a checked output hash or a headline figure is off (mdgen.reference)."""
import json
import subprocess
import sys
from pathlib import Path

from mdgen import reference
from mdgen.io import read_json


def committed(path: str) -> str:
    return subprocess.run(["git", "show", f"HEAD:{path}"], check=True, capture_output=True, text=True).stdout


def main() -> int:
    ref_lock = reference.read_yaml(committed("dvc.lock"), "HEAD:dvc.lock")
    ref_metrics = json.loads(committed("metrics/evaluate.json"))
    run = read_json("data/reference/default_run.json")
    cur_lock = reference.read_yaml(Path("dvc.lock").read_text(), "dvc.lock")
    cur_metrics = read_json("metrics/evaluate.json")
    dvc_yaml = reference.read_yaml(Path("dvc.yaml").read_text(), "dvc.yaml")
    stages, failures = reference.check(cur_lock, ref_lock, cur_metrics, ref_metrics, run, dvc_yaml)
    print(f"reproduction check: this machine {reference.machine()}, the reference's {run['machine']}")
    print(f"output hashes checked for: {', '.join(stages)}")
    for name in reference.HEADLINE:
        print(f"  {name}: {reference.lookup(cur_metrics, name):.4f} (reference {reference.lookup(ref_metrics, name):.4f}, "
              f"seed std {run['seed_std'][name]:.4f}, tolerance {run['tolerance_std']} std)")
    for f in failures:
        print(f"FAIL {f}", file=sys.stderr)
    print("reproduction check: " + ("FAILED" if failures else "passed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
