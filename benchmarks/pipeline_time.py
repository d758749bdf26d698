"""Time `dvc repro` stage by stage, then time a second `dvc repro` that should run nothing.

    python benchmarks/pipeline_time.py                 # in the repository root (a fresh clone)
    python benchmarks/pipeline_time.py --out times.json -- -f   # extra args after -- go to dvc repro

DVC prints "Running stage '<name>':" when a stage starts; a stage's time is from its line to the next
stage's line (or the end of the run), so it includes DVC's own hashing and caching of the outputs.
Prints a Markdown table (the one in the README) and writes JSON with --out.
"""
import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

STAGE_LINE = re.compile(r"Running stage '([^']+)'")


def timed_repro(extra: list[str]) -> tuple[list[tuple[str, float]], float]:
    start = time.perf_counter()
    marks: list[tuple[str, float]] = []
    proc = subprocess.Popen(["dvc", "repro", *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        m = STAGE_LINE.search(line)
        if m:
            marks.append((m.group(1), time.perf_counter() - start))
    if proc.wait() != 0:
        raise SystemExit(f"dvc repro {' '.join(extra)} failed with exit code {proc.returncode}")
    total = time.perf_counter() - start
    ends = [t for _, t in marks[1:]] + [total]
    return [(name, end - t0) for (name, t0), end in zip(marks, ends)], total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    ap.add_argument("extra", nargs="*", help="arguments for the first dvc repro (after --)")
    args = ap.parse_args()

    stages, total = timed_repro(args.extra)
    second_stages, second = timed_repro([])
    rows = ["| stage | seconds |", "|---|---:|"]
    rows += [f"| {name} | {sec:.1f} |" for name, sec in stages]
    rows += [f"| **total `dvc repro`** | **{total:.1f}** ({total / 60:.1f} min) |",
             f"| second `dvc repro` (nothing to run) | {second:.1f} |"]
    print("\n" + "\n".join(rows))
    if second_stages:
        print(f"WARNING: the second dvc repro ran {[n for n, _ in second_stages]}")
    if args.out:
        args.out.write_text(json.dumps({"stages": dict(stages), "total_s": total, "second_repro_s": second,
                                        "second_repro_ran": [n for n, _ in second_stages]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
