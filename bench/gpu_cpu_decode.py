"""Streams encoded on a GPU decode on the CPU to exactly what the encoder recorded.

Encodes images with ``--device`` (a GPU) as format 6 (latent grids), keeps the encoder's own record of
every decoded integer (network tensors and latents, as the SHA-256 of
``LatentImage.digest``) and its expert map, then decodes each stream in a fresh CPU-only
process with torch unavailable and compares: integers and expert choices must be
identical, pixels within the spec's tolerance (one code value on at most 0.5% of samples).

    python bench/gpu_cpu_decode.py ../shared/data/kodak --images 4 --device cuda --out results/gpu_cpu_decode
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from nxcodec.bench.results import git_commit, machine_name
from nxcodec.codec import EncodeOptions, encode_signals
from nxcodec.latent import stream
from nxcodec.signals import for_name

CPU_DECODE = """
import sys, json, hashlib
sys.modules['torch'] = None
import numpy as np
from nxcodec.latent import stream
out = {}
for path in sys.argv[1:]:
    latents = stream.decode_latents(open(path, 'rb').read())
    image, experts = stream.reconstruct(latents)
    np.save(path + '.cpu.npy', image)
    out[path] = [latents.digest(), hashlib.sha256(experts.astype('<i8').tobytes()).hexdigest()]
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--quality", type=int, default=5)
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    commit = git_commit()  # the commit this run starts from
    args.out.mkdir(parents=True, exist_ok=True)
    image = for_name("image")
    paths = sorted(args.src.glob("*.png"))[: args.images]
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    results = encode_signals(image, [image.from_array(a) for a in arrays],
                             EncodeOptions(quality=args.quality, iters=args.iters, device=args.device, format=6))
    recorded, files = {}, []
    for path, res in zip(paths, results):
        f = args.out / f"{path.stem}.nxc"
        f.write_bytes(res.data)
        latents = stream.decode_latents(res.data)  # the encoder machine's own decode, for its record
        img, experts = stream.reconstruct(latents)
        np.save(str(f) + ".gpu.npy", img)
        recorded[str(f)] = [latents.digest(), hashlib.sha256(experts.astype("<i8").tobytes()).hexdigest()]
        files.append(str(f))
    cpu = json.loads(subprocess.run([sys.executable, "-c", CPU_DECODE, *files], capture_output=True, text=True,
                                    check=True, env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin",
                                                     "PYTHONPATH": ":".join(sys.path)}).stdout)
    rows = []
    for f in files:
        a, b = np.load(f + ".gpu.npy").astype(int), np.load(f + ".cpu.npy").astype(int)
        diff = np.abs(a - b)
        rows.append({"stream": Path(f).name, "integers_sha256": recorded[f][0], "experts_sha256": recorded[f][1],
                     "integers_equal": recorded[f][0] == cpu[f][0],
                     "experts_equal": recorded[f][1] == cpu[f][1], "max_sample_diff": int(diff.max()),
                     "fraction_differing": float(np.mean(diff > 0))})
        print(rows[-1])
    ok = all(r["integers_equal"] and r["experts_equal"] and r["max_sample_diff"] <= 1
             and r["fraction_differing"] <= 0.005 for r in rows)
    summary = {"machine": machine_name(args.device), "commit": commit, "device": args.device, "ok": ok,
               "streams": rows}
    (args.out / "gpu_cpu_decode.json").write_text(json.dumps(summary, indent=1) + "\n")
    print("all streams decode identically on the CPU" if ok else "MISMATCH", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
