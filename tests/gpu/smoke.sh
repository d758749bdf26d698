#!/usr/bin/env bash
# GPU smoke test: the tiny pipeline end to end on CUDA, every precision path a GPU user takes, in a few minutes.
#
#   OUT=/some/dir bash tests/gpu/smoke.sh       # on a CUDA machine, from anywhere
#   BENCH_DRY_RUN=1 bash tests/gpu/smoke.sh     # the same steps on a CPU (tests/test_gpu_smoke.py runs this)
#
# In a scratch folder with a tiny params.yaml (2 persons x 8 simulated images at 64 px, the shipped
# tokenizer, LightningDiT-Tiny/1): simulate, split, extract (auto precision), stats, train in bf16-mixed,
# train in 16-mixed (fp16 with loss scaling, what a T4 gets), train with DDP in one process, sample,
# classifier, sift, evaluate and `mdgen generate`; then a full-size random VA-VAE (f16d32, 70 M parameters)
# encodes and decodes in fp16 and bf16 autocast, and any non-finite value fails the step. Every step
# runs even when an earlier one failed (a step that needs a failed one fails too), so one run shows all
# that breaks. Installs nothing; uses the package from src/. Writes under $OUT (default
# benchmarks/results/smoke): smoke.log (all output) and summary.txt (one line per step: ok/FAIL, seconds;
# the card, torch and CUDA versions first). Exits 1 if any step failed.
#
# On a CPU (BENCH_DRY_RUN=1) the precisions a CPU lacks are swapped for what it runs: 32-true for the
# mixed-precision trainings, fp32 for the VA-VAE, at 64 px; the commands are otherwise the same.
set -uo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${OUT:-$REPO/benchmarks/results/smoke}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
LOG="$OUT/smoke.log"
SUMMARY="$OUT/summary.txt"
: >"$LOG"
failed=0

if [[ "${BENCH_DRY_RUN:-0}" == 1 ]]; then
  ACCEL=cpu BF16=32-true FP16=32-true VAE_DTYPES=fp32 VAE_SIZE=64
else
  ACCEL=gpu BF16=bf16-mixed FP16=16-mixed VAE_DTYPES=fp16,bf16 VAE_SIZE=256
fi

"$PY" - >"$SUMMARY" <<'EOF'
import platform, torch
card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"no CUDA device ({platform.machine()} CPU)"
print(f"card: {card}; torch {torch.__version__}; CUDA {torch.version.cuda}")
EOF

# step NAME COMMAND...: run it in $WORK, time it, record ok/FAIL
step() {
  local name=$1 t0=$SECONDS rc
  shift
  echo "== $name: $*" | tee -a "$LOG"
  (cd "$WORK" && "$@") >>"$LOG" 2>&1
  rc=$?
  if ((rc == 0)); then
    printf '%-22s ok    %4ds\n' "$name" $((SECONDS - t0)) | tee -a "$SUMMARY"
  else
    printf '%-22s FAIL  %4ds  (exit %d, see smoke.log)\n' "$name" $((SECONDS - t0)) "$rc" | tee -a "$SUMMARY"
    failed=1
  fi
}

mdgen() { "$PY" -m mdgen "$@"; }

# set KEY=VALUE...: change the scratch params.yaml (validated by the stage that reads it)
set_params() {
  "$PY" - "$@" <<'EOF'
import sys, yaml
tree = yaml.safe_load(open("params.yaml"))
for arg in sys.argv[1:]:
    key, value = arg.split("=", 1)
    *path, last = key.split(".")
    node = tree
    for part in path:
        node = node[part]
    node[last] = yaml.safe_load(value)
yaml.safe_dump(tree, open("params.yaml", "w"), sort_keys=False)
EOF
}

cp "$REPO/params.yaml" "$WORK/params.yaml"
mkdir -p "$WORK/data/pretrained"
cp "$REPO"/data/pretrained/mdgen-vae-f16d32-sim.safetensors "$WORK/data/pretrained/"
(cd "$WORK" && set_params simulate.users=2 simulate.images_per_user=8 data.image_size=64 split.block_size=2 \
  extract.batch_size=8 extract.plot_per_user=1 model.name=LightningDiT-Tiny/1 \
  train.max_steps=4 train.batch_size=4 train.warmup_steps=0 train.checkpoint_every=2 train.val_every=2 \
  train.compile=false train.accelerator=$ACCEL train.resume=never \
  sample.images_per_user=2 sample.steps=4 sample.batch_size=4 sample.plot_per_user=1 \
  classifier.image_size=16 classifier.width=2 classifier.steps=2 classifier.batch_size=4 sift.method=none \
  evaluate.full_seeds=1 evaluate.fewshot_per_user=1 evaluate.fewshot_steps=1 evaluate.seeds=1 evaluate.kid_subsets=2 \
  evaluate.kid_subset_size=2 evaluate.precision_recall_k=1 evaluate.density_coverage_k=1 evaluate.plot_pairs=2)

step simulate mdgen simulate
step split mdgen split
step tokenizer mdgen tokenizer
step extract mdgen extract
step stats mdgen stats
(cd "$WORK" && set_params train.precision=$FP16)
step train_fp16 mdgen train
(cd "$WORK" && set_params train.precision=$BF16 train.strategy=ddp train.devices=1)
step train_ddp_1proc mdgen train
(cd "$WORK" && set_params train.strategy=auto)
step train_bf16 mdgen train
step sample mdgen sample
step classifier mdgen classifier
step sift mdgen sift
step evaluate mdgen evaluate
step generate mdgen generate --user ID_1 --n 2 --out generated
step vavae_full_size "$PY" - "$VAE_DTYPES" "$VAE_SIZE" <<'EOF'
import sys, time, torch
from mdgen.tokenizer import AutoencoderKL, load_tokenizer
dtypes, size = sys.argv[1].split(","), int(sys.argv[2])
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
torch.manual_seed(0)
# the released layout: a Lightning .pt with the weights under 'state_dict', read back by load_tokenizer
torch.save({"state_dict": AutoencoderKL().state_dict()}, "vavae-random.pt")
vae = load_tokenizer("vavae-random.pt", device=device)
x = torch.rand(4, 3, size, size, device=device) * 2 - 1
for name in dtypes:
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}[name]
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        t0 = time.perf_counter()
        z = vae.encode(x).sample()
        y = vae.decode(z)
        if device.type == "cuda":
            torch.cuda.synchronize()
    finite = bool(torch.isfinite(z).all() and torch.isfinite(y).all())
    print(f"VA-VAE {name}: latents {tuple(z.shape)}, encode+decode of 4 images {time.perf_counter() - t0:.2f} s, "
          f"finite: {finite}, max |latent| {z.abs().max().item():.1f}, max |decoded| {y.abs().max().item():.1f}")
    if not finite:
        sys.exit(f"VA-VAE {name}: non-finite values")
EOF

echo "summary: $SUMMARY" | tee -a "$LOG"
cat "$SUMMARY"
exit "$failed"
