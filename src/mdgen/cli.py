"""`mdgen <command>`: one sub-command per DVC stage, plus ad-hoc tools.

Stage modules are imported only when their command runs, so `mdgen split` does not
pay for importing torch.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# command -> (module, help)
STAGES = {
    "simulate": ("mdgen.stages.simulate", "simulate gait spectrograms -> data/simulated/"),
    "split": ("mdgen.stages.split", "per-user train/val split -> data/split.json"),
    "extract": ("mdgen.stages.extract", "encode images with the tokenizer -> data/latents/{train,val}.safetensors"),
    "stats": ("mdgen.stages.stats", "per-channel latent statistics -> data/latents/latents_stats.pt"),
    "train": ("mdgen.stages.train", "train the LightningDiT -> models/dit/ (resumes last.ckpt)"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mdgen", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (_, help_) in STAGES.items():
        s = sub.add_parser(name, help=help_)
        s.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        module = importlib.import_module(STAGES[args.command][0])
        module.main(params_path=args.params)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        if args.debug:
            raise
        # one line, naming the file/key: the library's messages are written to be read alone
        print(f"mdgen {args.command}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
