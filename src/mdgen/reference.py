"""The committed reference run: what a fresh `dvc repro` is held against, and the README table written from it.

The reference is the default run's `dvc.lock` and `metrics/` in git, plus `data/reference/default_run.json`:
the machine it ran on and the spread of its headline figures over sampling seeds
(`release/seed_spread.py`). A reproduction passes when

- every data or model output (not metrics, not figures) of a stage listed as portable (pure numpy/PIL: the same bytes on any CPU) has the hash that
  the committed `dvc.lock` records, and so has every output of the later stages when the CPU has the same
  instruction-set features as the reference's (torch picks kernels, and bf16 or fp32 under `precision:
  auto`, by them, which changes the last bits and from there the trained model);
- no headline figure is worse than the reference's by more than `tolerance_std` of its spread over sampling
  seeds: the seed alone moves a figure by that much, so a smaller margin would fail honest reruns.
"""
from __future__ import annotations

import platform
from pathlib import Path

import torch
import yaml

from mdgen.errors import BadFileError

# metrics/evaluate.json's headline numbers the check compares (conditional accuracy / real val, TSTR / TRTR,
# FID / floor) -> which way is better
HEADLINE = {"acc_x": "higher", "tstr_x": "higher", "fid_x": "lower"}
# stages whose outputs are the same bytes on every CPU (numpy, PIL, json): checked on any machine
PORTABLE_STAGES = ("simulate", "split")
# CPU features that decide torch's kernels and `precision: auto`
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def machine() -> dict:
    """What the reproduction's bytes depend on: torch version and the CPU's relevant instruction-set features."""
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return {"torch": torch.__version__, "arch": platform.machine(), "cpu_flags": [f for f in CPU_FLAGS if f in flags]}


def lookup(metrics: dict, dotted: str):
    for key in dotted.split("."):
        metrics = metrics[key]
    return metrics


def quality_failures(current: dict, reference: dict, spread: dict, tolerance_std: float) -> list[str]:
    """Headline figures of `current` worse than `reference` by more than tolerance_std x their seed spread."""
    failures = []
    for name, better in HEADLINE.items():
        now, ref, std = lookup(current, name), lookup(reference, name), spread[name]
        margin = tolerance_std * std
        worse = ref - now if better == "higher" else now - ref
        if worse > margin:
            failures.append(f"{name}: {now:.4f} against the reference {ref:.4f} ({'higher' if better == 'higher' else 'lower'} "
                            f"is better; allowed {margin:.4f} = {tolerance_std} x seed std {std:.4f})")
    return failures


def compared_outputs(dvc_yaml: dict) -> set[str]:
    """Outputs whose hash a reproduction must match: the data and models. Left out: `cache: false` outputs
    (metrics JSON and plot data, which hold timings; the headline figures are compared by value instead) and
    figures under plots/ (drawn from outputs that are compared)."""
    out = set()
    for stage in dvc_yaml.get("stages", {}).values():
        for entry in stage.get("outs", []):
            path, opts = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
            if (opts or {}).get("cache", True) and not path.startswith("plots/"):
                out.add(path)
    return out


def lock_outputs(lock: dict, compared: set[str]) -> dict[str, dict[str, str]]:
    """stage -> {output path: md5} from a parsed dvc.lock, for the `compared` paths only."""
    return {stage: {o["path"]: o.get("md5", "") for o in entry.get("outs", []) if o["path"] in compared}
            for stage, entry in lock.get("stages", {}).items()}


def hash_failures(current_lock: dict, reference_lock: dict, stages: list[str], compared: set[str]) -> list[str]:
    cur, ref = lock_outputs(current_lock, compared), lock_outputs(reference_lock, compared)
    failures = []
    for stage in stages:
        if stage not in ref:
            failures.append(f"{stage}: not in the reference dvc.lock")
            continue
        for path, md5 in ref[stage].items():
            got = cur.get(stage, {}).get(path)
            if got != md5:
                failures.append(f"{stage}: {path} has md5 {got}, the reference dvc.lock records {md5}")
    return failures


def check(current_lock: dict, reference_lock: dict, current_metrics: dict, reference_metrics: dict,
          reference_run: dict, dvc_yaml: dict) -> tuple[list[str], list[str]]:
    """(stages whose hashes were checked, failures) of a reproduction against the reference."""
    here, there = machine(), reference_run["machine"]
    same_machine = here["cpu_flags"] == there["cpu_flags"] and here["torch"] == there["torch"]
    stages = list(reference_lock.get("stages", {})) if same_machine else list(PORTABLE_STAGES)
    failures = hash_failures(current_lock, reference_lock, stages, compared_outputs(dvc_yaml))
    failures += quality_failures(current_metrics, reference_metrics, reference_run["seed_std"],
                                 reference_run["tolerance_std"])
    return stages, failures


def read_yaml(text: str, what: str) -> dict:
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise BadFileError(f"{what}: not YAML ({e})") from None


def results_table(metrics: dict, reference_run: dict) -> str:
    """The README's results table, from the full evaluate figures (metrics/details/evaluate.json) and the seed
    spread of the reference run."""
    c, t, d = metrics["conditional"], metrics["tstr"], metrics["distribution"]
    a, m = metrics["augmentation"], metrics["memorisation"]
    std = reference_run["seed_std"]
    rows = [
        "| measure | default run | spread over sampling seeds (std) |",
        "|---|---:|---:|",
        f"| judge (trained on real) on samples: conditional accuracy | {c['generated_accuracy']:.3f} "
        f"({c['ratio']:.3f}× real val {c['real_val_accuracy']:.3f}) | {std['acc_x']:.3f} |",
        f"| train on synthetic, test on real (TSTR) / real-trained (TRTR) | {t['tstr_accuracy']:.3f} / "
        f"{t['trtr_accuracy']:.3f} = {t['ratio']:.3f} | {std['tstr_x']:.3f} |",
        f"| FID in the judge's features | {d['fid']:.2f} | — |",
        f"| real-vs-real floor (mean ± std over train subsets) | {d['fid_real_floor']:.2f} ± "
        f"{d['fid_real_floor_std']:.2f} | — |",
        f"| FID / floor | {d['fid_ratio']:.2f} | {std['fid_x']:.2f} |",
        f"| KID ± std over subsets / its real-vs-real floor | {d['kid']:.4f} ± {d['kid_std']:.4f} / "
        f"{d['kid_real_floor']:.4f} ± {d['kid_real_floor_std']:.4f} | — |",
        *[augmentation_row(a, arm) for arm in ("fewshot", "full") if arm in a],
        f"| memorisation share (chance {m['expected']:.2f}) | {m['share']:.3f} | — |",
    ]
    return "\n".join(rows)


def augmentation_row(section: dict, arm: str) -> str:
    a = section[arm]
    who = "full (every real train image)" if arm == "full" else f"few-shot ({a['real_train_per_user']} real per person)"
    ci = "no interval from one seed" if a["gain_ci95"] is None else \
        f"95 % interval [{a['gain_ci95'][0]:+.3f}, {a['gain_ci95'][1]:+.3f}]"
    return (f"| {who}: accuracy on real val, real only → + {section['generated_images']} samples "
            f"({len(a['per_seed'])} seeds) | {a['real_only_mean']:.3f} → {a['real_plus_generated_mean']:.3f} "
            f"(gain {a['gain_mean']:+.3f}, {ci}) | — |")


BEGIN, END = "<!-- results table: release/readme_results.py -->", "<!-- end of results table -->"


def replace_table(readme: str, table: str) -> str:
    if BEGIN not in readme or END not in readme:
        raise BadFileError(f"README: the markers {BEGIN} and {END} are missing")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"
