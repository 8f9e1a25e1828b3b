"""PSNR-vs-bpp plots of result JSONs, with published codecs drawn beside them."""

from __future__ import annotations

from pathlib import Path

from nxcodec.bench.results import load_curves

PUBLISHED = Path(__file__).resolve().parents[2] / "bench" / "published"


def plot_rd(paths: list[Path], output: Path, published: Path | None = PUBLISHED, title: str = "Kodak") -> None:
    """Draw measured curves (solid) and published ones (dashed, grey family) into ``output``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = load_curves(paths)
    others = load_curves(sorted(published.glob("*.json"))) if published and published.is_dir() else []
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    for c in measured:
        style = dict(lw=2.2, marker="o", ms=4) if c["name"] == "nxcodec" else dict(lw=1.4, marker=".", ms=5)
        ax.plot(c["bpp"], c["psnr"], label=f"{c['name']} (measured)", **style)
    for c in others:
        ax.plot(c["bpp"], c["psnr"], ls="--", lw=1.0, marker="x", ms=3, label=f"{c['name']} (published)")
    ax.set_xlabel("bits per pixel (whole file)")
    ax.set_ylabel("PSNR over RGB (dB)")
    ax.set_title(f"Rate-distortion on {title}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.part.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(output)
