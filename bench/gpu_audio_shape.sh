#!/usr/bin/env bash
# The full audio and shape benchmarks on one CUDA GPU, side by side: every clip at full length
# (all planes) at 4 rate targets against MP3/Opus/FLAC, and every mesh at 5 qualities against
# Draco and Draco after decimation. Each benchmark fits all its signals of a rate/quality in one
# stack and runs its baselines in worker processes; both share the GPU.
#
#   bench/gpu_audio_shape.sh AUDIO_DIR MESH_DIR OUT_DIR
#
# Environment: LIMIT (seconds each benchmark may run, default 450; a stopped benchmark keeps
# every point it measured and can be resumed), AUDIO_ITERS and SHAPE_ITERS (default: the presets'
# iterations; 300-iteration audio fits scored about 3 dB below the presets' 1000 on the CPU runs),
# NXCODEC_DEVICE (cuda). On a machine without a package index, bring .whl/ (see gpu_kodak.sh).
set -uo pipefail
[ $# -eq 3 ] || { echo "usage: $0 AUDIO_DIR MESH_DIR OUT_DIR" >&2; exit 2; }
audio=$1 meshes=$2 out=$3
cd "$(dirname "$0")/.."
export NXCODEC_COMMIT=${NXCODEC_COMMIT:-$(bench/commit_stamp.sh read 2>/dev/null)}  # the tree's commit (bench/commit_stamp.sh)
start=$(date +%s)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if ! python3 -c "import constriction, soundfile, trimesh, DracoPy, fast_simplification" 2>/dev/null; then
  [ -d .whl ] || { echo "packages are missing and there is no .whl/ folder to install them from" >&2; exit 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/nxcodec-site .whl/*.whl
  export PYTHONPATH=/tmp/nxcodec-site:$PYTHONPATH
fi
python3 -c "import nxcodec.cli, skimage, matplotlib, DracoPy, fast_simplification, soundfile" || exit 2
mkdir -p "$out"
device=${NXCODEC_DEVICE:-cuda}
workers=$(( ($(nproc) - 2) / 2 > 0 ? ($(nproc) - 2) / 2 : 1 ))
timeout "${LIMIT:-450}" python3 -m nxcodec bench audio "$audio" --out "$out/audio" --kbps 16,24,32,64 \
  ${AUDIO_ITERS:+--iters "$AUDIO_ITERS"} --device "$device" --workers "$workers" >"$out/audio.log" 2>&1 &
audio_pid=$!
timeout "${LIMIT:-450}" python3 -m nxcodec bench shape "$meshes" --out "$out/shape" --qualities 1,3,5,7,8 \
  ${SHAPE_ITERS:+--iters "$SHAPE_ITERS"} --device "$device" --workers "$workers" >"$out/shape.log" 2>&1 &
shape_pid=$!
wait $audio_pid; audio_rc=$?
wait $shape_pid; shape_rc=$?
echo "audio exit $audio_rc, shape exit $shape_rc (124: stopped by LIMIT, points kept); wall time $(( $(date +%s) - start )) s"
grep -h "nxcodec" "$out/audio.log" | tail -5
cat "$out/audio/bdrate.md" 2>/dev/null
cat "$out/shape/table.md" 2>/dev/null
