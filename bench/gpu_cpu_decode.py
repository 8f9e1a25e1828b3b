"""Streams encoded on a GPU decode on the CPU to exactly what the encoder recorded.

Encodes images with ``--device`` (a GPU) as format 6 (latent grids), keeps the encoder's own record of
every decoded integer (network tensors and latents, as the SHA-256 of
``LatentImage.digest``) and its expert map, then decodes each stream in a fresh CPU-only
process with torch unavailable and compares: integers and expert choices must be
identical, pixels within the spec's tolerance (one code value on at most 0.5% of samples).

    python bench/gpu_cpu_decode.py ../shared/data/kodak --images 4 --device cuda --out results/gpu_cpu_decode

``--check`` decodes such a run's streams again on another machine (this project's CPU) and compares them
with the encoder's record (and with its decoded pixels, where ``*.gpu.npy`` came along):

    python bench/gpu_cpu_decode.py --check bench/results/gpu_cpu_decode_h200 --out check.json
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


def _cpu_decode(files: list[str]) -> dict:
    """Decode ``files`` in a fresh process where torch is unavailable; their digests by path."""
    return json.loads(subprocess.run([sys.executable, "-c", CPU_DECODE, *files], capture_output=True, text=True,
                                     check=True, env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin",
                                                      "PYTHONPATH": ":".join(sys.path)}).stdout)


def _compare(name: str, recorded: list[str], cpu: list[str], gpu_image: Path, cpu_image: Path) -> dict:
    row = {"stream": name, "integers_sha256": recorded[0], "experts_sha256": recorded[1],
           "integers_equal": recorded[0] == cpu[0], "experts_equal": recorded[1] == cpu[1]}
    if gpu_image.exists():
        diff = np.abs(np.load(gpu_image).astype(int) - np.load(cpu_image).astype(int))
        row.update(max_sample_diff=int(diff.max()), fraction_differing=float(np.mean(diff > 0)))
    return row


def _ok(rows: list[dict]) -> bool:
    return all(r["integers_equal"] and r["experts_equal"] and r.get("max_sample_diff", 0) <= 1
               and r.get("fraction_differing", 0) <= 0.005 for r in rows)


def check(folder: Path, out: Path) -> bool:
    """Decode a finished run's streams (``folder``) again on this machine and compare them with its record."""
    commit = git_commit()
    record = json.loads((folder / "gpu_cpu_decode.json").read_text())
    files = [str(folder / r["stream"]) for r in record["streams"]]
    cpu = _cpu_decode(files)
    rows = [_compare(r["stream"], [r["integers_sha256"], r["experts_sha256"]], cpu[f], Path(f + ".gpu.npy"),
                     Path(f + ".cpu.npy")) for r, f in zip(record["streams"], files)]
    for f in files:
        Path(f + ".cpu.npy").unlink()
    for r in rows:
        print(r)
    ok = _ok(rows)
    out.write_text(json.dumps({"machine": machine_name("cpu"), "commit": commit, "encoded_on": record["machine"],
                               "encoded_at": record["commit"], "ok": ok, "streams": rows}, indent=1) + "\n")
    print("all streams decode here as on the encoder" if ok else "MISMATCH", flush=True)
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, help="the images to encode; with --check, a finished run's folder")
    ap.add_argument("--check", action="store_true",
                    help="decode the streams of a finished run (SRC) again here and compare them with its record")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--quality", type=int, default=5)
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.check:
        sys.exit(0 if check(args.src, args.out) else 1)
    commit = git_commit()  # the commit this run starts from
    args.out.mkdir(parents=True, exist_ok=True)
    image = for_name("image")
    paths = sorted(args.src.glob("*.png"))[: args.images]
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    options = EncodeOptions(quality=args.quality, iters=args.iters, device=args.device, format=image.latent_format)
    results = encode_signals(image, [image.from_array(a) for a in arrays], options)
    recorded, files = {}, []
    for path, res in zip(paths, results):
        f = args.out / f"{path.stem}.nxc"
        f.write_bytes(res.data)
        latents = stream.decode_latents(res.data)  # the encoder machine's own decode, for its record
        img, experts = stream.reconstruct(latents)
        np.save(str(f) + ".gpu.npy", img)
        recorded[str(f)] = [latents.digest(), hashlib.sha256(experts.astype("<i8").tobytes()).hexdigest()]
        files.append(str(f))
    cpu = _cpu_decode(files)
    rows = [_compare(Path(f).name, recorded[f], cpu[f], Path(f + ".gpu.npy"), Path(f + ".cpu.npy")) for f in files]
    for r in rows:
        print(r)
    ok = _ok(rows)
    summary = {"machine": machine_name(args.device), "commit": commit, "device": args.device, "ok": ok,
               "streams": rows}
    (args.out / "gpu_cpu_decode.json").write_text(json.dumps(summary, indent=1) + "\n")
    print("all streams decode identically on the CPU" if ok else "MISMATCH", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
