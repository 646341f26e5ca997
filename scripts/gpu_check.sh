#!/usr/bin/env bash
# Every CUDA check of the project in one command, for a GPU node without a package index.
# See usage() below, or run: bash scripts/gpu_check.sh --help
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  cat <<'EOF'
usage: bash scripts/gpu_check.sh [--cpu] [--out DIR] [--wheels DIR] [--python PY] [--scale F]

Runs every check that needs CUDA, in order, each under its own time limit, going on past a
failure, and writes everything under one folder:

  install       the wheels of `make gpu-kit` (.whl/) into a temporary folder on PYTHONPATH
  cuda_tests    tests/test_cuda.py and the CUDA LPIPS test     -> cuda_tests.xml
  data          a synthetic head (ns-latentavatar-synth), 512^2
  train         `ns-train latentavatar`, 200 steps: step time, peak memory  -> train.json
  bench_speed   scripts/bench_speed.py --device cuda --resolution 512, every variant and its
                floor, the default's first         -> speed_cuda.json (and bench/speed_cuda.json)
  samplers      uniform, proposal and occupancy sampling on CUDA -> samplers.json
  nerfacc       nerfacc's occupancy-grid estimator: its CUDA build and sampling -> nerfacc.json
  time_to_psnr  the paper's configuration against the default, same data and seconds
                                                   -> time_to_psnr.json
  summary.json and summary.txt: each step's status (ok, failed, timeout) and seconds, and the
  targets of the README's "Speed and memory"; logs/<step>.log: each step's output.

On a GPU the limits add up to 560 s (under 10 minutes). The exit status is 0 when every step
is ok, 1 when one is not, 2 when nothing could run.

options:
  --cpu          the same steps at latentavatar-tiny's size on the CPU (64^2 frames, a few
                 steps; the CUDA tests run CPU against CPU): checks this script in a few
                 minutes; the install is skipped when nerfstudio is importable already
  --out DIR      the output folder (default: gpu_check_output/ in the repository)
  --wheels DIR   the wheels to install (default: .whl/ in the repository)
  --python PY    the Python with PyTorch (default: $PYTHON, else python3)
  --scale F      multiply every time limit by F (a slower GPU; a cold machine, where the first
                 steps wait for CUDA's caches and nerfacc's build)
  -h, --help     this text

The node needs Python 3.12 with PyTorch (CUDA), and nvcc and ninja for nerfacc's extension.
LPIPS weights are read from $LATENTAVATAR_CACHE, else from .whl/cache/ when the kit has them
(make gpu-kit GPU_KIT_LPIPS=1), else from ~/.cache/latentavatar-ns; without them the LPIPS loss
is off, which train.json's "lpips_loss" says.
EOF
}

die() { echo "gpu_check: $*" >&2; exit 2; }

MODE=gpu
OUT=$REPO/gpu_check_output
WHEELS=$REPO/.whl
PY=${PYTHON:-python3}
SCALE=1
while [ $# -gt 0 ]; do
  case $1 in
    --cpu) MODE=cpu ;;
    --out) [ $# -ge 2 ] || die "--out needs a folder"; OUT=$2; shift ;;
    --out=*) OUT=${1#--out=} ;;
    --wheels) [ $# -ge 2 ] || die "--wheels needs a folder"; WHEELS=$2; shift ;;
    --wheels=*) WHEELS=${1#--wheels=} ;;
    --python) [ $# -ge 2 ] || die "--python needs a path"; PY=$2; shift ;;
    --python=*) PY=${1#--python=} ;;
    --scale) [ $# -ge 2 ] || die "--scale needs a number"; SCALE=$2; shift ;;
    --scale=*) SCALE=${1#--scale=} ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done

awk -v s="$SCALE" 'BEGIN { exit !(s + 0 > 0) }' || die "--scale must be a positive number, not '$SCALE'"
command -v "$PY" >/dev/null 2>&1 || die "no Python '$PY': give --python or set PYTHON"
command -v timeout >/dev/null 2>&1 || die "no 'timeout' command (GNU coreutils) on this machine"
mkdir -p "$OUT/logs" || die "cannot write the output folder $OUT"
OUT=$(cd "$OUT" && pwd)
# Only what an earlier run of this script wrote there.
(cd "$OUT" && rm -f summary.json summary.txt cuda_tests.xml train.json speed_cuda.json speed_cpu.json samplers.json \
  nerfacc.json time_to_psnr.json logs/steps.tsv logs/*.log)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || die "cannot make a temporary folder"
trap 'rm -rf "$WORK"' EXIT
SITE=$WORK/site

# Seconds each step may take. On a GPU they add up to 560; the first steps on a new machine pay for
# cuDNN's algorithm search (nerfstudio's ns-train turns it on) and nerfacc's build (about 80 s).
# The CPU mode's are generous ceilings for a slow machine (it takes a few minutes on two cores).
declare -A LIMIT
if [ "$MODE" = gpu ]; then
  LIMIT=([install]=15 [cuda_tests]=85 [data]=20 [train]=75 [bench_speed]=150 [samplers]=45 [nerfacc]=95
         [time_to_psnr]=75)
  RES=512 FRAMES=48 STEPS=200 CPU_FLAG=
else
  LIMIT=([install]=60 [cuda_tests]=240 [data]=60 [train]=180 [bench_speed]=240 [samplers]=180 [nerfacc]=60
         [time_to_psnr]=180)
  RES=64 FRAMES=12 STEPS=4 CPU_FLAG=--cpu
fi

NOTES=()
FAILED=0

# run_step NAME OUTPUTS COMMAND...: run COMMAND in the repository under NAME's limit, log to logs/NAME.log,
# record the status and seconds in logs/steps.tsv (OUTPUTS: the files it writes, comma-separated).
run_step() {
  local name=$1 outputs=$2 start end status rc seconds limit
  limit=$(awk -v l="${LIMIT[$1]}" -v s="$SCALE" 'BEGIN { printf "%d", l * s + 0.5 }')
  shift 2
  printf '%-13s ' "$name"
  start=${EPOCHREALTIME:-$SECONDS}
  (cd "$REPO" && exec timeout -k 10 "$limit" "$@") >"$OUT/logs/$name.log" 2>&1
  rc=$?
  end=${EPOCHREALTIME:-$SECONDS}
  seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  case $rc in
    0) status=ok ;;
    124|137) status=timeout ;;
    *) status=failed ;;
  esac
  [ "$status" = ok ] || FAILED=1
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$seconds" "$limit" "$rc" "$outputs" >>"$OUT/logs/steps.tsv"
  echo "$status (${seconds} s of ${limit} s)"
  if [ "$status" != ok ]; then tail -n 5 "$OUT/logs/$name.log" | sed 's/^/    /'; fi
}

summary() {  # summary [WHY IT STOPPED]
  local args=(--out "$OUT" --mode "$MODE") note
  if [ $# -gt 0 ]; then args+=(--stopped "$1"); fi
  for note in "${NOTES[@]+"${NOTES[@]}"}"; do args+=(--note "$note"); done
  echo
  "$PY" "$REPO/scripts/gpu_check.py" summary "${args[@]}" || echo "gpu_check: the summary failed; see $OUT/logs" >&2
}

export PYTHONUNBUFFERED=1
if [ -z "${LATENTAVATAR_CACHE:-}" ] && [ -d "$WHEELS/cache" ]; then
  export LATENTAVATAR_CACHE=$WHEELS/cache
fi

# ------------------------------------------------------------------ the kit
have_nerfstudio() {
  "$PY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("nerfstudio") is None)' 2>/dev/null
}
shopt -s nullglob
wheels=("$WHEELS"/*.whl)
shopt -u nullglob
echo "gpu_check ($MODE mode): $PY, output in $OUT"
if [ "$MODE" = cpu ] && have_nerfstudio; then
  NOTES+=("the kit was not installed: nerfstudio is importable already")
elif [ ${#wheels[@]} -gt 0 ]; then
  run_step install "" "$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check \
    --target "$SITE" "${wheels[@]}"
  if [ "$FAILED" = 1 ]; then
    why="the wheels of $WHEELS did not install: see $OUT/logs/install.log"
    summary "$why" >/dev/null 2>&1
    die "$why"
  fi
  # The project's wheel brings its entry points (ns-train's method table); its code comes from here,
  # last on the path, so that no *.egg-info left in the repository outranks the wheel's metadata.
  rm -rf "$SITE/latentavatar_ns"
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}:$REPO
  NOTES+=("the kit: ${#wheels[@]} wheels from $WHEELS")
elif have_nerfstudio; then
  NOTES+=("the kit was not installed: no wheels in $WHEELS, and nerfstudio is importable already")
else
  die "no wheels in $WHEELS and no nerfstudio in $PY: run make gpu-kit first" \
    "(on a machine with a package index) and copy .whl/ here with the repository"
fi

# What every step needs; nothing can run without it, so it ends the check with one line.
preflight=$(cd "$REPO" && "$PY" scripts/gpu_check.py preflight --mode "$MODE" 2>&1) \
  || { why=$(echo "$preflight" | tail -n 1); summary "$why" >/dev/null 2>&1; die "$why"; }
while IFS= read -r line; do NOTES+=("$line"); done < <(echo "$preflight" | sed -n 's/^note: //p')
echo "$preflight" | tail -n 1

# ------------------------------------------------------------------ the steps
TESTS=(tests/test_cuda.py tests/test_lpips_assets.py::test_lpips_cuda_matches_cpu)
PYTEST=("$PY" -m pytest -rs -p no:cacheprovider --basetemp "$WORK/pytest" --junitxml "$OUT/cuda_tests.xml")
if [ "$MODE" = gpu ]; then
  run_step cuda_tests cuda_tests.xml "${PYTEST[@]}" "${TESTS[@]}"
else
  # CPU against CPU; the 150-step training test is left to the GPU (the train step trains here).
  NOTES+=("cuda_tests ran CPU against CPU, without test_training_loss_falls")
  run_step cuda_tests cuda_tests.xml env LATENTAVATAR_TEST_DEVICE=cpu "${PYTEST[@]}" "${TESTS[@]}" \
    --deselect tests/test_cuda.py::test_training_loss_falls
fi

DATA=$WORK/data
HELPER=("$PY" scripts/gpu_check.py)
run_step data "" "${HELPER[@]}" console ns-latentavatar-synth --output-dir "$DATA" --resolution "$RES" \
  --num-frames "$FRAMES"

run_step train train.json "${HELPER[@]}" train $CPU_FLAG --steps "$STEPS" --data "$DATA" --runs "$WORK/runs" \
  --out "$OUT/train.json"

if [ "$MODE" = gpu ]; then
  # The default's variants first: each is written as it ends, so a step cut short keeps them.
  run_step bench_speed speed_cuda.json "$PY" scripts/bench_speed.py --device cuda --resolution 512 \
    --variants paper proposal bf16_render all patch compiled --output "$OUT/speed_cuda.json"
  if [ -f "$OUT/speed_cuda.json" ]; then cp "$OUT/speed_cuda.json" "$REPO/bench/speed_cuda.json"; fi
else
  # bench_speed.py with latentavatar-tiny's networks (the paper's take ten seconds a step on a CPU).
  run_step bench_speed speed_cpu.json "${HELPER[@]}" speed-tiny --device cpu --resolution 64 \
    --variants paper --train-steps 1 --frames 1 --output "$OUT/speed_cpu.json"
fi

run_step samplers samplers.json "${HELPER[@]}" samplers $CPU_FLAG --data "$DATA" --runs "$WORK/runs" \
  $([ "$MODE" = cpu ] && echo --iterations 1 --timed-steps 1) --out "$OUT/samplers.json"

run_step nerfacc nerfacc.json "${HELPER[@]}" nerfacc $CPU_FLAG --out "$OUT/nerfacc.json"

run_step time_to_psnr time_to_psnr.json "${HELPER[@]}" time-to-psnr $CPU_FLAG --data "$DATA" --runs "$WORK/runs" \
  $([ "$MODE" = cpu ] && echo --budget 0.1 --points 2 --warmup 0 || echo --budget 20 --points 4) \
  --out "$OUT/time_to_psnr.json"

summary
exit $FAILED
