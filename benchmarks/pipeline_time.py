"""Time `dvc repro` stage by stage, then time a second `dvc repro` that should run nothing.

    python benchmarks/pipeline_time.py                 # in the repository root (a fresh clone)
    python benchmarks/pipeline_time.py --out times.json -- -f   # extra args after -- go to dvc repro

DVC prints "Running stage '<name>':" when a stage starts; a stage's time is from its line to the next
stage's line (or the end of the run), so it includes DVC's own hashing and caching of the outputs.
Prints a Markdown table (the one in docs/reference-run.md) and writes JSON with --out.

Machines of one kind differ in speed by up to 2x, so a pipeline time means little alone: first this runs the
project's reference figure, `mdgen bench --what train --model LightningDiT-Tiny/2 --batch 32 --precision bf16
--device cpu --compile` (ms per training step; --no-bench skips it), and prints it beside the times. Since
`model.attention: auto` that command times the plain attention on a CPU, faster than the fused kernel every
earlier reference figure (the 229 ms machine's included) was measured with; the same command with `--attention
fused` is printed too, the figure to scale by against those.

torch.compile (`train.compile`) keeps compiled kernels in a cache under /tmp that outlives a clone, so a
second timing on the same machine would leave the compile out; each run here gets an empty cache
(TORCHINDUCTOR_CACHE_DIR in a temporary folder), as on a fresh machine, unless --warm-compile-cache.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGE_LINE = re.compile(r"Running stage '([^']+)'")


def timed_repro(extra: list[str], env: dict[str, str] | None = None) -> tuple[list[tuple[str, float]], float]:
    start = time.perf_counter()
    marks: list[tuple[str, float]] = []
    proc = subprocess.Popen(["dvc", "repro", *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1, env=env)
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


BENCH = ["mdgen", "bench", "--what", "train", "--model", "LightningDiT-Tiny/2", "--batch", "32",
         "--precision", "bf16", "--device", "cpu", "--compile"]
FUSED = ("--attention", "fused")  # the workload of every reference figure measured before model.attention


def bench_reference(extra: tuple[str, ...] = ()) -> float:
    """The reference figure of this machine, now: ms per compiled Tiny/2 training step (median of 3).

    Its compiled kernels go to a cache of its own, so that the pipeline's training still compiles from scratch.
    """
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out = Path(tmp) / "bench.json"
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(Path(tmp) / "inductor")}
        subprocess.run([*BENCH, *extra, "--out", str(out)], check=True, env=env, stdout=subprocess.DEVNULL)
        return float(json.loads(out.read_text())["results"]["train"]["step_ms"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    ap.add_argument("--warm-compile-cache", action="store_true",
                    help="keep torch.compile's kernel cache from earlier runs (default: start empty)")
    ap.add_argument("--no-bench", action="store_true", help="skip the machine's reference figure")
    ap.add_argument("extra", nargs="*", help="arguments for the first dvc repro (after --)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="inductor-cache-") as cache:
        env = None if args.warm_compile_cache else {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        bench_ms = None if args.no_bench else bench_reference()
        fused_ms = None if args.no_bench else bench_reference(FUSED)
        stages, total = timed_repro(args.extra, env)
        second_stages, second = timed_repro([], env)
    rows = ["| stage | seconds |", "|---|---:|"]
    rows += [f"| {name} | {sec:.1f} |" for name, sec in stages]
    rows += [f"| **total `dvc repro`** | **{total:.1f}** ({total / 60:.1f} min) |",
             f"| second `dvc repro` (nothing to run) | {second:.1f} |"]
    if bench_ms is not None:
        rows.append(f"| machine reference: `{' '.join(BENCH)}` | {bench_ms:.1f} ms/step |")
        rows.append(f"| the same with `{' '.join(FUSED)}` (the figure earlier references are) | "
                    f"{fused_ms:.1f} ms/step |")
    print("\n" + "\n".join(rows))
    if second_stages:
        print(f"WARNING: the second dvc repro ran {[n for n, _ in second_stages]}")
    if args.out:
        args.out.write_text(json.dumps({"bench_train_ms": bench_ms, "bench_train_fused_ms": fused_ms,
                                        "stages": dict(stages), "total_s": total,
                                        "second_repro_s": second,
                                        "second_repro_ran": [n for n, _ in second_stages]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
