#!/usr/bin/env bash
# The GPU configurations of the "Speed on GPUs" issue through `mdgen bench`, within a time budget.
#
#   OUT=/some/dir bash benchmarks/gpu_bench.sh      # on a CUDA machine, from anywhere
#   BENCH_DRY_RUN=1 bash benchmarks/gpu_bench.sh    # the same plumbing on a CPU in ~2 min (tiny configs)
#
# Installs nothing: it needs torch, lightning, pyyaml, safetensors, numpy, pillow, tqdm, which the GPU
# image has; the package is used from src/ (PYTHONPATH), not installed. The train runs take their
# optimizer, loss and EMA settings from the repository's params.yaml (`mdgen bench --params`' default:
# the script runs in the repository root). Writes under $OUT (default
# benchmarks/results/): gpu_bench.json (every run's full report, in order, plus what was skipped),
# gpu_bench.log (all output) and summary.txt (the table printed last).
#
# Budget: BENCH_BUDGET_S (default 450 s) for all runs. Each run carries an estimate of its cost on an
# H100/H200 (compilation dominates: whole-model torch.compile of forward+backward is about a minute
# for B/1 and two for XL/1); a run whose estimate no longer fits is skipped and listed, and a run is
# killed when the budget is spent. Order = priority: the eager figures first, then compiled ones.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
BUDGET="${BENCH_BUDGET_S:-450}"
RUNS="$(mktemp -d)"
LOG="$OUT/gpu_bench.log"
: >"$LOG"
start=$SECONDS
n=0

# Dry run: every configuration shrunk to --quick on the CPU, eager (compiling on a CPU takes minutes)
DRY=()
if [[ "${BENCH_DRY_RUN:-0}" == 1 ]]; then
  DRY=(--quick --device cpu --batch 2 --repeats 1 --iters 1 --warmup 1 --steps 4 --e2e-steps 2 --no-compile)
fi

# bench NAME ESTIMATE_S ARGS...: one `mdgen bench` run, skipped if its estimate does not fit
bench() {
  local name=$1 est=$2
  shift 2
  local left=$((BUDGET - (SECONDS - start)))
  n=$((n + 1))
  if ((left < est)); then
    echo "== skip $name: ${left}s of the budget left, needs ~${est}s" | tee -a "$LOG"
    echo "$name" >>"$RUNS/skipped.txt"
    return 0
  fi
  local json
  json="$RUNS/$(printf %02d $n)_$name.json"
  echo "== $name (~${est}s, ${left}s left): mdgen bench $* ${DRY[*]}" | tee -a "$LOG"
  printf '%s\n' "$* ${DRY[*]}" >"${json%.json}.args"
  timeout -k 10 "$left" "$PY" -m mdgen.bench "$@" "${DRY[@]}" --out "$json" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  ((rc == 0)) || echo "== $name exited $rc" | tee -a "$LOG"
}

TRAIN=(--what train --precision bf16 --repeats 5 --iters 5 --warmup 3)
SAMPLE=(--what sample --precision bf16 --batch 256 --steps 250 --e2e-steps 10 --cfg-scale 2.0
        --cfg-interval-start 0.1 --repeats 3 --iters 2 --warmup 3)
TOK=(--what tokenizer --batch 64 --repeats 5 --warmup 3)

# eager: every other fast path on (flash SDPA, TF32, fused AdamW, foreach EMA, data on device)
bench train_B1_eager 20 "${TRAIN[@]}" --model LightningDiT-B/1 --batch 256 --no-compile
# upstream's loop habits on the same card: per-tensor EMA, foreach AdamW, loss.item() per step, host batch
bench train_B1_eager_upstream_loop 20 "${TRAIN[@]}" --model LightningDiT-B/1 --batch 256 --no-compile \
  --ema loop --no-fused-adamw --host-sync --data host
bench train_XL1_eager 35 "${TRAIN[@]}" --model LightningDiT-XL/1 --batch 128 --no-compile
bench sample_B1_eager 30 "${SAMPLE[@]}" --model LightningDiT-B/1 --no-compile
bench sample_XL1_eager 40 "${SAMPLE[@]}" --model LightningDiT-XL/1 --no-compile
bench tokenizer_fp32_eager 20 "${TOK[@]}" --precision fp32 --no-compile --no-channels-last
bench tokenizer_bf16_eager 15 "${TOK[@]}" --precision bf16 --no-compile --no-channels-last
bench tokenizer_bf16_eager_channels_last 15 "${TOK[@]}" --precision bf16 --no-compile --channels-last
# compiled
bench train_B1_compiled 75 "${TRAIN[@]}" --model LightningDiT-B/1 --batch 256 --compile
bench train_XL1_compiled 120 "${TRAIN[@]}" --model LightningDiT-XL/1 --batch 128 --compile
bench tokenizer_bf16_compiled_channels_last 80 "${TOK[@]}" --precision bf16 --compile --channels-last
bench sample_B1_compiled 70 "${SAMPLE[@]}" --model LightningDiT-B/1 --compile
bench sample_XL1_compiled 110 "${SAMPLE[@]}" --model LightningDiT-XL/1 --compile

"$PY" - "$RUNS" "$OUT" "$BUDGET" "$((SECONDS - start))" <<'EOF' 2>&1 | tee -a "$LOG"
# Merge the runs into one JSON and print the compact table (upstream's H200 figures beside ours).
import json, sys
from pathlib import Path

runs_dir, out, budget, elapsed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
REF = {"train_B1": "2289 samples/s, 315 TFLOP/s", "train_XL1": "476 samples/s, 338 TFLOP/s",
       "sample_B1": "60 ms; 17.1 img/s", "sample_XL1": "274 ms; 3.7 img/s",
       "tokenizer": "enc 712, dec 432 img/s"}
runs = []
for path in sorted(runs_dir.glob("*.json")):
    name = path.stem.split("_", 1)[1]
    runs.append({"name": name, "args": path.with_suffix(".args").read_text().split(), "report": json.loads(path.read_text())})
skipped = (runs_dir / "skipped.txt").read_text().split() if (runs_dir / "skipped.txt").exists() else []
device = runs[0]["report"]["device"] if runs else None
merged = {"device": device, "budget_s": budget, "elapsed_s": elapsed, "runs": runs, "skipped": skipped}
(out / "gpu_bench.json").write_text(json.dumps(merged, indent=2) + "\n")

def f(v, spec=".1f"):
    return "-" if v is None else format(v, spec)

lines = [f"device: {device['name'] if device else '?'}; torch {runs[0]['report']['torch'] if runs else '?'}; "
         f"{elapsed}s of {budget}s; upstream reference: LightningDiT code on an H200 (issue)",
         f"{'run':40} {'result':64} upstream (H200)"]
for r in runs:
    name, res = r["name"], r["report"]["results"]
    what = next(iter(res))
    x = res[what]
    if "error" in x:
        text = "FAILED: " + x["error"][:56]
    elif what == "train":
        text = f"{x['samples_per_s']:.0f} samples/s, {f(x['tflops'])} TFLOP/s" + (
            f", {100 * x['mfu']:.1f}% of {x['peak_tflops']:.0f}" if x["mfu"] is not None else "")
    elif what == "sample":
        text = (f"CFG fwd {f(x['cfg_forward_ms'])} ms; {x['steps']} NFE: {x['latents_images_per_s_full_cfg']:.1f} "
                f"img/s full CFG, {x['latents_images_per_s_skip_uncond']:.1f} skip, {x['images_per_s']:.1f} decoded")
    else:
        text = f"enc {x['encode_images_per_s']:.0f}, dec {x['decode_images_per_s']:.0f} img/s"
    flags = [a for a in r["args"] if a in ("--compile", "--no-compile")]
    if "error" not in x and flags[-1:] == ["--compile"] and not x["compiled"]:
        text += " (compile FAILED: eager)"
    ref = next((v for k, v in REF.items() if name.startswith(k)), "")
    lines.append(f"{name:40} {text:64} {ref}")
for s in skipped:
    lines.append(f"{s:40} skipped (budget)")
table = "\n".join(lines)
(out / "summary.txt").write_text(table + "\n")
print(table)
EOF
rm -rf "$RUNS"
