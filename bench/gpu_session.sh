#!/usr/bin/env bash
# The one device call a session lent a GPU makes for the measurements still open, inside BUDGET_S seconds:
#   1. a one-minute 44.1 kHz stereo clip encoded with the presets' fit under --kbps 32 and decoded
#      (bench/audio_long.py: the audio issue's GPU encode time), at most AUDIO_S seconds (default 150);
#   2. bench/gpu_image_call.sh with what is left: GPU-encoded image streams decoded on the CPU, the fit's seconds per
#      iteration at 24 images, then Kodak at full size (default --qualities 5 --group 24; other bench options after
#      BUDGET_S replace them).
# Everything lands in OUT_DIR (audio_minute_gpu.json, results.tar.gz). Before the call, here:
#   ../shared/gpu/fetch-wheels.sh pytorch-msssim pillow==13.0.0; mkdir -p .data; cp -r ../shared/data/kodak .data/
#   bench/commit_stamp.sh write
# then carry [".whl", ".data", ".bench-commit"] and begin the command with the brief's pip line:
#   bench/gpu_session.sh .data/kodak $OUT 480
# BUDGET_S counts from this script's start: with the machine's start and the pip line before it, 480 s leaves a
# 10-minute call (timeout_s 600) some slack, and a session of 15 device minutes no second try either way.
# DEVICE (default cuda) and AUDIO_ITERS (default 0: the presets' fit) may be set, for a dry run on a CPU.
set -uo pipefail
[ $# -ge 3 ] || { echo "usage: $0 KODAK_DIR OUT_DIR BUDGET_S [bench options]" >&2; exit 2; }
src=$1 out=$2 budget=$3
shift 3
[ $# -gt 0 ] || set -- --qualities 5 --group 24
cd "$(dirname "$0")/.."
export NXCODEC_COMMIT=${NXCODEC_COMMIT:-$(bench/commit_stamp.sh read 2>/dev/null)}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
start=$(date +%s)
mkdir -p "$out"
timeout -k 10 -s INT "${AUDIO_S:-150}" python3 bench/audio_long.py --seconds 60 --iters "${AUDIO_ITERS:-0}" --kbps 32 \
  --device "${DEVICE:-cuda}" --out "$out/audio_minute_gpu.json" 2>&1 | tail -n 5
echo "audio_long: exit ${PIPESTATUS[0]}, $(( $(date +%s) - start )) s"
DEVICE=${DEVICE:-cuda} bench/gpu_image_call.sh "$src" "$out" $(( budget - ($(date +%s) - start) )) "$@"
