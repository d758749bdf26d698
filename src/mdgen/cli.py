"""`mdgen <command>`: one sub-command per DVC stage, plus ad-hoc tools.

Stage modules are imported only when their command runs, so `mdgen split` does not
pay for importing torch.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from mdgen.errors import MdgenError

# DVC stage command -> (module, help)
STAGES = {
    "simulate": ("mdgen.stages.simulate", "simulate gait spectrograms -> data/simulated/"),
    "texture": ("mdgen.stages.texture", "texture card of the images against a real-data reference -> metrics/texture.json"),
    "split": ("mdgen.stages.split", "per-user train/val split -> data/split.json"),
    "tokenizer": ("mdgen.stages.tokenizer", "tokenizer.checkpoint as it is, or fitted to the train split -> models/tokenizer/"),
    "extract": ("mdgen.stages.extract", "encode images with the tokenizer -> data/latents/{train,val}.safetensors"),
    "stats": ("mdgen.stages.stats", "per-channel latent statistics -> data/latents/latents_stats.pt"),
    "train": ("mdgen.stages.train", "train the LightningDiT -> models/dit/ (resumes last.ckpt)"),
    "sample": ("mdgen.stages.sample", "generate spectrograms per user -> data/samples/"),
    "classifier": ("mdgen.stages.classifier", "train the user-identification judge on real train images -> models/classifier.safetensors"),
    "sift": ("mdgen.stages.sift", "keep the samples the judge and the gait measures find plausible -> data/sifted/"),
    "evaluate": ("mdgen.stages.evaluate", "score data/samples/ (identity, FID/KID, memorisation, kinematics, augmentation) -> metrics/evaluate.json"),
}
# commands outside the pipeline that run like a stage, `main(params_path=...)`:
# command -> (module, help, default of --params)
TOOLS = {
    "tokenizer-train": ("mdgen.tools.tokenizer_train", "train the small default tokenizer shipped in data/pretrained/ "
                        "(not a DVC stage; --params is its own yaml)", "data/pretrained/mdgen-vae-f16d32-sim.yaml"),
}
COMMANDS = {**{name: (module, help_, "params.yaml") for name, (module, help_) in STAGES.items()}, **TOOLS}


def version() -> str:
    """`mdgen --version`: mdgen's version, and the installed torch's, read from its package metadata (importing
    torch takes seconds)."""
    from importlib import metadata

    from mdgen import __version__
    try:
        torch = f" (torch {metadata.version('torch')})"
    except metadata.PackageNotFoundError:
        torch = ""
    return f"mdgen {__version__}{torch}"


class _Version(argparse.Action):
    """`--version`, its text made only when asked (argparse's own `version` action takes it up front)."""

    def __init__(self, option_strings, dest, help=None):
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """`mdgen`'s parser: every command and option, each with its help (tests/test_api.py checks)."""
    parser = argparse.ArgumentParser(prog="mdgen", description=__doc__.splitlines()[0],
                                     epilog="mdgen bench [...]: training/sampling/tokenizer throughput "
                                            "(see mdgen bench --help)")
    parser.add_argument("--version", action=_Version, help="print mdgen's version (and torch's) and exit")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (_, help_, default) in COMMANDS.items():
        s = sub.add_parser(name, help=help_)
        s.add_argument("--params", default=default, help=f"parameters file (default: {default})")
        if name == "sift":  # the one stage users also run on samples of their own, outside the pipeline's folders
            s.add_argument("--samples", default="data/samples",
                           help="folder of samples, one sub-folder per person of the split (default: data/samples)")
            s.add_argument("--out", default="data/sifted", help="where the kept samples go, replaced as a whole "
                                                                 "(default: data/sifted)")
            s.add_argument("--details", default="metrics/details/sift.json",
                           help="what was kept and dropped, and why (default: metrics/details/sift.json)")
    g = sub.add_parser("generate", help="generate spectrograms of one user from a trained models/dit/ (outside DVC)",
                       description="Images of one person from a trained model, sampled as the `sample` stage "
                                   "samples: SpectrogramGenerator.from_pretrained(--model-dir).generate(--user, "
                                   "--n) (docs/python-api.md). Run it in the repository root: the paths the model "
                                   "records are relative to the folder `train` ran in.")
    g.add_argument("--user", required=True, help="person to generate: a person folder of the training data, e.g. "
                                                 "ID_3 (an unknown one is refused with the list)")
    g.add_argument("--n", type=int, default=16, help="number of images (default: 16)")
    g.add_argument("--out", default="generated", help="output folder for <user>_<k>.png (default: generated/)")
    g.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale, 1: none "
                                                   "(default: sample.cfg_scale of --params)")
    g.add_argument("--steps", type=int, help="solver steps (default: sample.steps of --params)")
    g.add_argument("--seed", type=int, help="noise seed: the images depend only on seed and user "
                                            "(default: seed of --params)")
    g.add_argument("--model-dir", default="models/dit",
                   help="the trained model, written by `mdgen train`: its ema.safetensors holds the EMA weights "
                        "and records, by path and sha256, the latent statistics and the tokenizer it was trained "
                        "with (default: models/dit)")
    g.add_argument("--stats", help="latent statistics file (latents_stats.pt: the per-channel mean and std the "
                                   "model's latents were normalised with; default: the path the model records, "
                                   "data/latents/latents_stats.pt under dvc repro); its sha256 must be the recorded one")
    g.add_argument("--tokenizer", help="tokenizer checkpoint that decodes the samples (default: the path the model "
                                       "records, the tokenizer `extract` encoded its training images with); its "
                                       "sha256 must be the recorded one unless --allow-other-tokenizer")
    g.add_argument("--params", help="parameters file for the sampling options: the `sample` section (solver, steps, "
                                    "guidance, batch size, precision), seed and data.image_size (default: params.yaml)")
    g.add_argument("--allow-other-tokenizer", action="store_true",
                   help="decode with a tokenizer the model's latents did not come from (e.g. a fine-tuned copy at "
                        "the recorded path, or --tokenizer); it must still fit the model's latents")
    d = sub.add_parser("params", help="every key of params.yaml: its value, what it takes and what it means")
    d.add_argument("section", nargs="?", help="only this section or key, e.g. train or sample.cfg_scale")
    d.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    e = sub.add_parser("export-dit", help="write models/dit/last.ckpt as upstream LightningDiT's .pt ({'model','ema'})")
    e.add_argument("--ckpt", default="models/dit/last.ckpt", help="Lightning checkpoint of `mdgen train`")
    # beside models/dit, not in it: a file added to the train stage's output makes DVC rerun train and sample
    e.add_argument("--out", default="models/upstream.pt", help="output .pt (default: models/upstream.pt)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # its own parser: every argument after `bench` goes to it
        from mdgen import bench
        return bench.main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "generate":
            generate(args)
        elif args.command == "params":
            from mdgen import params
            print(params.describe(args.params, args.section))
        elif args.command == "export-dit":
            from mdgen.checkpoints import export_upstream
            r = export_upstream(args.ckpt, args.out)
            print(f"export-dit: {r['tensors']} tensors per part (step {r['step']}) -> {r['path']}")
        else:
            paths = dict(samples_dir=args.samples, out_dir=args.out, details_path=args.details) \
                if args.command == "sift" else {}
            importlib.import_module(COMMANDS[args.command][0]).main(params_path=args.params, **paths)
    except Exception as e:  # noqa: BLE001 -- sorted below: a user's mistake is one line, a bug a traceback
        if args.debug or not user_error(e):
            raise
        # one line, naming the file/key: the library's messages are written to be read alone
        print(f"mdgen {args.command}: error: {e}", file=sys.stderr)
        return 1
    return 0


def user_error(e: BaseException) -> bool:
    """Errors that say what the user must change: mdgen's own types (`mdgen.errors`: params, data, files,
    a busy or unwritable output, a diverging run), a file the OS refuses (its message names it), and
    Lightning's configuration errors (e.g. `train.accelerator=gpu` on a machine without one). Anything
    else is a bug, shown with its traceback so that a report can be acted on."""
    if isinstance(e, (MdgenError, PermissionError)):
        return True
    lightning = sys.modules.get("lightning.fabric.utilities.exceptions")  # only if the command imported it
    return lightning is not None and isinstance(e, lightning.MisconfigurationException)


def generate(args: argparse.Namespace) -> None:
    from pathlib import Path

    from mdgen.generator import SpectrogramGenerator, check_option
    from mdgen.images import save_png
    from mdgen.io import check_output_path

    # each option checked as its params.yaml twin is, before anything is read (one declaration of each range)
    for name in ("n", "cfg_scale", "steps", "seed"):
        if getattr(args, name) is not None:
            check_option(name, getattr(args, name), option="--" + name.replace("_", "-"))
    out = Path(args.out)
    check_output_path(out, folder=True)  # before any weights load: not a file, nor beneath one
    SpectrogramGenerator.check_user(Path(args.model_dir) / "ema.safetensors", args.user)
    gen = SpectrogramGenerator.from_pretrained(args.model_dir, params_path=args.params, stats=args.stats,
                                               tokenizer=args.tokenizer, allow_other_tokenizer=args.allow_other_tokenizer)
    chosen = {"seed": args.seed, "steps": args.steps, "cfg_scale": args.cfg_scale}
    config, _ = gen.options(**chosen)
    imgs = gen.generate(args.user, args.n, **chosen)
    for k, im in enumerate(imgs):
        save_png(out / f"{args.user}_{k:04d}.png", im)
    print(f"generate: {len(imgs)} images of {args.user} (cfg {config.cfg_scale}, {config.steps} steps) -> {out}")


if __name__ == "__main__":
    sys.exit(main())
