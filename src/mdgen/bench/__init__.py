"""`mdgen bench` (also `python -m mdgen.bench`): training, sampling and tokenizer throughput.

Benchmark code, kept out of the library: `cli` (flags, settings, the run), `report` (the table),
`train`, `sample` and `tokenizer` (one section each; `python -m mdgen.bench.tokenizer` is the
tokenizer sweep), `common` (device, peaks, timing, compile fallback), `flops` (model FLOPs).
Submodules are imported when used, so `python -m mdgen.bench.tokenizer` runs without them.
"""
from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """`mdgen bench ARGS`: print the table, write --out; 1 if a section failed."""
    from mdgen.bench.cli import main as cli_main
    return cli_main(argv)


def run(argv: list[str] | None = None) -> dict:
    """The report `mdgen bench ARGS` would write, without printing it."""
    from mdgen.bench.cli import run as cli_run
    return cli_run(argv)
