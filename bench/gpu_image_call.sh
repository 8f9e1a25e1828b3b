#!/usr/bin/env bash
# One device call for the image codec, inside a wall-clock budget: first GPU-encoded streams decoded on the
# CPU (bench/gpu_cpu_decode.py, a few images, short fits), then the full Kodak benchmark (bench/gpu_kodak.sh)
# at the given qualities, stopped in time to pack what it measured. Its point store resumes the run in a
# later call: bring OUT_DIR/kodak back into the tree first.
#
#   bench/gpu_image_call.sh KODAK_DIR OUT_DIR BUDGET_S [`nxcodec bench image` options, e.g. --qualities 5]
#
# DEVICE (default cuda), CHECK_ITERS (default 200, the decode check's fits) and PROBE_STACKS (default 24: the
# stack sizes whose seconds per iteration bench/fit_speed.py measures before the benchmark, so that a call
# whose budget cannot hold a quality's fit still tells how long one takes; empty: no probe) may be set.
# Everything lands in OUT_DIR/results.tar.gz (gpu_cpu_decode/, fit_speed.json, kodak/, gpu.log with the GPU's
# load every 15 s, call.log), since a device call returns only a few files.
set -uo pipefail
[ $# -ge 3 ] || { echo "usage: $0 KODAK_DIR OUT_DIR BUDGET_S [bench options]" >&2; exit 2; }
src=$1 out=$2 budget=$3
shift 3
cd "$(dirname "$0")/.."
export NXCODEC_COMMIT=${NXCODEC_COMMIT:-$(bench/commit_stamp.sh read 2>/dev/null)}  # the tree's commit (bench/commit_stamp.sh)
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }
res=$(mktemp -d)
mkdir -p "$out" "$res/kodak"
[ -d "$out/kodak" ] && cp -r "$out/kodak/." "$res/kodak/"
device=${DEVICE:-cuda}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
  (while :; do nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader; sleep 15; done \
    >"$res/gpu.log" 2>&1) &
  monitor=$!
  t0=$(date +%s)
  # each step runs only if the budget still holds its time limit and the packing after it (about 30 s)
  [ "$(left)" -gt 170 ] && timeout -k 20 -s INT 120 python3 bench/gpu_cpu_decode.py "$src" --images 2 --iters "${CHECK_ITERS:-200}" --device "$device" \
    --out "$res/gpu_cpu_decode"
  echo "gpu_cpu_decode: exit $?, $(( $(date +%s) - t0 )) s"
  probe=${PROBE_STACKS-24}
  if [ -n "$probe" ] && [ "$(left)" -gt 130 ]; then
    t0=$(date +%s)
    timeout -k 10 -s INT 90 python3 bench/fit_speed.py "$src" --stacks "$probe" --iters 10 --optimizers soap-synthesis \
      --profile-stack 0 --device "$device" --out "$res/fit_speed.json"
    echo "fit_speed: exit $?, $(( $(date +%s) - t0 )) s"
  fi
  # the fit of a stack takes about 2,400 iterations (2000 and the warm-up race's): skipped where the probe says it
  # cannot end in the time left, so that the call packs what it has instead of stopping a fit midway
  need=$(python3 -c "import json; print(int(2400 * json.load(open('$res/fit_speed.json'))['rows'][0]['s_per_iter']))" \
    2>/dev/null || echo 0)
  t0=$(date +%s)
  # stopped 50 s before the budget, killed 20 s after that if its workers' running jobs keep it (they ignore
  # SIGINT and finish), so there is time left to pack
  if [ "$(left)" -gt 90 ] && [ "$need" -lt $(( $(left) - 50 )) ]; then
    NXCODEC_DEVICE=$device timeout -k 20 -s INT $(( $(left) - 50 )) bench/gpu_kodak.sh "$src" "$res/kodak" "$@" 2>&1 \
      | tee -a "$res/kodak/run.log"
    echo "gpu_kodak: exit ${PIPESTATUS[0]}, $(( $(date +%s) - t0 )) s"
  else
    echo "gpu_kodak: not started, $(left) s left, a stack's fit needs about $need s (bench/fit_speed.py)"
  fi
  kill "$monitor"
  rm -f "$res"/gpu_cpu_decode/*.cpu.npy
  [ -f "$res/kodak/bdrate.md" ] && cat "$res/kodak/bdrate.md"
  grep -h "nxcodec q" "$res/kodak/run.log" 2>/dev/null | tail -30
} 2>&1 | tee "$res/call.log"
# the equal-bytes sheets are 4 MB each: keep one
(cd "$res" && find . -type f ! -name 'sheet_*' ! -name '.*' -o -name 'sheet_kodim23_*' -type f) >"$res/.files"
tar -czf "$out/results.tar.gz" -C "$res" -T "$res/.files"
echo "packed $(du -h "$out/results.tar.gz" | cut -f1), $(( $(date +%s) - start )) s in all"
