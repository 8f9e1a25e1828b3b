#!/usr/bin/env bash
# The full Kodak benchmark (24 images, full resolution, nxcodec at 5 qualities, JPEG/WebP/AVIF
# sweeps) on one CUDA GPU, then the RD plot. Target: under 9 minutes on an H100, install included.
#
#   bench/gpu_kodak.sh KODAK_DIR OUT_DIR [extra `nxcodec bench image` options]
#
# Before a device call, run bench/commit_stamp.sh write here and carry .bench-commit, so the results name the
# commit that ran. On a machine without a package index, first fill .whl/ here (where pip works):
#   ../shared/gpu/fetch-wheels.sh pytorch-msssim pillow==13.0.0
# and bring .whl/ along; the script installs from it into /tmp/nxcodec-site when a package is missing.
# nxcodec's images are fitted side by side (all 24 in one stack per quality); the baselines run
# in the machine's other cores meanwhile.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 KODAK_DIR OUT_DIR [bench options]" >&2; exit 2; }
src=$1 out=$2
shift 2
cd "$(dirname "$0")/.."
export NXCODEC_COMMIT=${NXCODEC_COMMIT:-$(bench/commit_stamp.sh read 2>/dev/null)}  # the tree's commit (bench/commit_stamp.sh)
start=$(date +%s)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if ! python3 -c "import constriction, soundfile, trimesh, pytorch_msssim, tqdm" 2>/dev/null; then
  [ -d .whl ] || { echo "packages are missing and there is no .whl/ folder to install them from" >&2; exit 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/nxcodec-site .whl/*.whl
  export PYTHONPATH=/tmp/nxcodec-site:$PYTHONPATH
fi
export PYTHONUNBUFFERED=1
python3 -m nxcodec bench image "$src" --out "$out" --device "${NXCODEC_DEVICE:-cuda}" "$@"
curves=()
for c in nxcodec jpeg webp avif; do [ -f "$out/$c.json" ] && curves+=("$out/$c.json"); done
python3 -m nxcodec plot "${curves[@]}" -o "$out/rd.png"
echo "wall time: $(( $(date +%s) - start )) s, install included"
