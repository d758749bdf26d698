"""The table `mdgen bench` prints: one row per measured figure, from the report it writes as JSON."""
from __future__ import annotations

HEADER = ("section", "setting", "ms", "throughput", "TFLOP/s", "% peak")
RIGHT = {2, 4, 5}  # numeric columns


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def _pct(fraction: float | None) -> str:
    return _fmt(None if fraction is None else 100 * fraction)


def _train_rows(r: dict, s: dict) -> list[tuple]:
    setting = (f"batch {r['batch']}, {'compiled' if r['compiled'] else 'eager'}, ema {s['ema']}, "
               f"{'fused' if s['fused_adamw'] else 'foreach'} AdamW")
    return [("train", setting, _fmt(r["step_ms"], ".2f"), f"{r['samples_per_s']:.1f} samples/s",
             _fmt(r["tflops"], ".3g"), _pct(r["mfu"]))]


def _sample_rows(r: dict, s: dict) -> list[tuple]:
    mode = "compiled" + (" +graphs" if r["cuda_graphs"] else "") if r["compiled"] else "eager"
    rows = []
    if r["cfg_forward_ms"] is not None:
        rows.append(("sample", f"one CFG forward, {r['batch']} images ({2 * r['batch']} rows), {mode}",
                     _fmt(r["cfg_forward_ms"], ".2f"), "-", _fmt(r["cfg_forward_tflops"], ".3g"),
                     _pct(r["cfg_forward_mfu"])))
    rows.append(("sample", f"one cond forward, {r['batch']} images", _fmt(r["cond_forward_ms"], ".2f"), "-", "-", "-"))
    rows.append(("sample", f"decode {r['batch']} images", _fmt(r["decode_ms"], ".2f"), "-", "-", "-"))
    for name, label in (("skip_uncond", f"skip uncond ({r['guided_steps']} guided)"),
                        ("full_cfg", "both halves every step")):
        rows.append(("sample", f"{r['steps']} NFE, cfg {s['cfg_scale']} from t>={s['cfg_interval_start']}, {label}",
                     "-", f"{r[f'latents_images_per_s_{name}']:.2f} img/s latents, "
                     f"{r[f'images_per_s_{name}']:.2f} decoded", "-", "-"))
    if r["e2e"]:
        e = r["e2e"]
        rows.append(("sample", f"measured: {e['steps']} steps end to end "
                     f"({'skip' if r['skip_uncond'] else 'full'}; estimate {e['latents_ms_estimate']:.1f} ms)",
                     _fmt(e["latents_ms"], ".1f"), f"{e['latents_images_per_s']:.2f} img/s latents, "
                     f"{e['images_per_s']:.2f} decoded", "-", "-"))
    return rows


def _tokenizer_rows(r: dict, s: dict) -> list[tuple]:
    setting = (f"batch {r['batch']} at {r['image_size']}px, {r['dtype']}, "
               f"{'compiled' if r['compiled'] else 'eager'}{', channels_last' if r['channels_last'] else ''}")
    return [("tokenizer", setting, "-", f"encode {r['encode_images_per_s']:.1f} img/s, "
             f"decode {r['decode_images_per_s']:.1f} img/s", "-", "-")]


SECTION_ROWS = {"train": _train_rows, "sample": _sample_rows, "tokenizer": _tokenizer_rows}


def format_table(report: dict) -> str:
    s, dev = report["settings"], report["device"]
    head = (f"mdgen bench: {dev['name']} ({dev['type']}), torch {report['torch']}, {s['model']}"
            f"{' (quick)' if s['quick'] else ''}, {s['precision']}, compile {'on' if s['compile'] else 'off'}, "
            f"attention {s['attention']}, sdpa {s['sdpa']}, median of {s['repeats']}")
    rows = [HEADER]
    for what, rows_of in SECTION_ROWS.items():
        r = report["results"].get(what)
        if r is None:
            continue
        rows += [(what, "FAILED", "-", r["error"][:60], "-", "-")] if "error" in r else rows_of(r, s)
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = [head] + ["  ".join(c.rjust(w) if i in RIGHT else c.ljust(w)
                                for i, (c, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
    return "\n".join(lines)
