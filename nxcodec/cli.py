"""The ``nxcodec`` command: one click command per verb.

User errors (bad paths, unreadable inputs, corrupt streams, outputs that exist) print one
line on stderr and exit with status 2; nothing partial is left behind.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from nxcodec import __version__, container, signals
from nxcodec.api import encode_file
from nxcodec.decoder import decode_stream, decode_to_file, describe_stream, output_kind
from nxcodec.errors import InputError, NxcError, OutputError, UsageError
from nxcodec.fit.presets import DEFAULT_QUALITY
from nxcodec.host_memory import keep_freed_memory
from nxcodec.limits import Limits
from nxcodec.model import ModelConfig
from nxcodec.io import (STDIO, check_source, check_stdout, check_writable, copy_to_stdout, display_name, is_stdio,
                        read_stream, write_atomic, write_bytes_atomic, write_stdout)

SAMPLE = Path(__file__).parent / "samples" / "hopper.png"
DEMO_CPU_ITERS = 500  # the presets' 2000 take about 8 minutes for the sample on 2 CPU cores


def _fail(message: str, status: int = 2) -> None:
    click.echo(f"nxcodec: error: {message}", err=True)
    sys.exit(status)


def user_errors(fn: Callable) -> Callable:
    """Turn user-facing failures into one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NxcError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except MemoryError:
            _fail("out of memory")

    return wrapper


def describe(cfg) -> str:
    """One line for a stream's networks, whatever the format."""
    if isinstance(cfg, ModelConfig):
        return container.describe_config(cfg)
    from nxcodec.latent.stream import describe_config as describe_latent

    return describe_latent(cfg)


def decoded_path(source: Path, modality: signals.Modality) -> Path:
    """``photo.png.nxc`` or ``photo.nxc`` -> ``photo.decoded.png``: beside the stream, never its source's name."""
    name = source.name[: -len(".nxc")] if source.name.lower().endswith(".nxc") else source.name
    if Path(name).suffix.lower() in modality.extensions:
        name = Path(name).stem
    return source.with_name(f"{name}.decoded{modality.output_extensions[0]}")


def rate_target(modality: signals.Modality, **targets: float | None) -> float | None:
    """The one rate option given, which must be in the modality's unit (``--bpp`` for images, ``--kbps`` for audio,
    ``--kb`` for shapes)."""
    given = {unit: value for unit, value in targets.items() if value is not None}
    if len(given) > 1:
        raise InputError("give one rate target, not " + " and ".join(f"--{u}" for u in given))
    if not given:
        return None
    unit, value = given.popitem()
    if unit != modality.rate_unit.lower():
        raise InputError(f"--{unit} does not apply to {modality.name}; its rate is set with --{modality.rate_unit.lower()}")
    return value


class OneLineErrors(click.Group):
    """Click's group, with its usage errors (an unknown option, a value out of range, a missing argument) on one
    line of stderr like every other error of the command line, instead of the usage text, a hint and the error."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as exc:
            if isinstance(exc, getattr(click.exceptions, "NoArgsIsHelpError", ())):  # no command: the help
                exc.show()
                sys.exit(exc.exit_code)
            where = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
            _fail(f"{exc.format_message()}{where}", exc.exit_code)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(0)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nxcodec")
def main() -> None:
    """nxcodec: compress a file by overfitting a mixture-of-experts neural network to it."""
    keep_freed_memory()  # every command decodes, codes or fits large arrays (nxcodec.host_memory)


device_option = click.option(
    "--device", default="auto", show_default=True, help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N."
)
force_option = click.option("--force", is_flag=True, help="Replace the output if it exists [default: refuse].")


@contextlib.contextmanager
def source_file(source: Path) -> Iterator[tuple[Path, signals.Modality]]:
    """The file to encode and its modality: ``source`` itself, or standard input saved to a temporary file with
    the extension of what it holds (the readers take paths; their messages name it ``stdin``)."""
    if not is_stdio(source):
        check_source(source)
        yield source, signals.for_path(source)
        return
    data = read_stream(source)
    modality, ext = signals.for_bytes(data)
    with tempfile.TemporaryDirectory(prefix="nxcodec-") as tmp:
        path = Path(tmp) / f"stdin{ext}"
        path.write_bytes(data)
        del data
        try:
            yield path, modality
        except InputError as exc:
            raise InputError(str(exc).replace(str(path), "stdin")) from None


def decode_to_stdout(data: bytes, device: str, limits: Limits, **options: Any) -> Any:
    """Decode a stream into its kind's default file type and send the finished file to standard output."""
    kind = output_kind(data)
    with tempfile.TemporaryDirectory(prefix="nxcodec-") as tmp:
        path = Path(tmp) / f"decoded{kind.output_extensions[0]}"
        decoded = decode_to_file(data, path, False, device, limits, **options)
        copy_to_stdout(path)
    return decoded


@main.command()
@click.argument("source", type=click.Path(readable=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Output .nxc, or - for standard output [default: SOURCE's name plus .nxc, e.g. photo.png.nxc, as "
                   "batch names them; standard output when SOURCE is -].")
@click.option("-q", "--quality", type=click.IntRange(1, 9), default=DEFAULT_QUALITY, show_default=True, help="1 (smallest) to 9 (best).")
@click.option("--bpp", type=float,
              help="Rate target in bits per pixel (whole file, images); overrides --quality [default: none].")
@click.option("--kbps", type=float,
              help="Rate target in kilobits per second (whole file, audio); overrides --quality [default: none].")
@click.option("--kb", type=float,
              help="Size target in kilobytes (1000 bytes, whole file, shapes); overrides --quality [default: none].")
@click.option("--iters", type=click.IntRange(min=1),
              help="Fitting iterations [default: the quality's preset, 1000 to 2000].")
@device_option
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed; a CPU encode with the same seed is reproducible.")
@click.option("--format", "fmt", type=click.Choice(["2", "8", "11", "12"]),
              help="Stream version: 12 codes latent grids (images), 11 MDCT planes on latent grids (audio), 8 3-D "
                   "grids with an occupancy map and built-in context models (shapes), 2 coordinate networks. Older "
                   "versions are read, not written [default: 12 for images, 11 for audio, 8 for shapes; 2 for images "
                   "under 4096 pixels and clips under a second].")
@click.option("-v", "--verbose", is_flag=True, help="Report float and decoded quality, the model and timings.")
@force_option
@user_errors
def encode(source: Path, output: Path | None, quality: int, bpp: float | None, kbps: float | None, kb: float | None,
           iters: int | None, device: str, seed: int, fmt: str | None, verbose: bool, force: bool) -> None:
    """Compress SOURCE (an image, an audio clip or a mesh; - for standard input) into an .nxc stream."""
    with source_file(source) as (path, modality):
        rate = rate_target(modality, bpp=bpp, kbps=kbps, kb=kb)
        if output is None:
            output = Path(STDIO) if is_stdio(source) else source.with_name(source.name + ".nxc")
        to_stdout = is_stdio(output)
        if to_stdout:
            check_stdout()
        elif output.suffix.lower() != ".nxc":
            raise OutputError(f"{output}: a stream is written as .nxc; name the output accordingly")
        else:
            check_writable(output, force)
        res = encode_file(path, quality=quality, rate=rate, iters=iters, device=device, seed=seed,
                          progress=sys.stderr.isatty(), modality=modality.name, format=int(fmt) if fmt else None)
    if to_stdout:
        write_stdout(res.data)
    else:
        write_bytes_atomic(output, res.data, force)
    report = functools.partial(click.echo, err=to_stdout)  # standard output may carry the stream
    report(f"{display_name(source)} -> {display_name(output, True)}: {len(res.data)} bytes, {res.rate:.4f} "
           f"{res.rate_unit}, {modality.summary(res.metrics)} ({res.encode_seconds:.1f} s on {res.device})")
    if verbose:
        report(f"  float {modality.summary(res.float_metrics)}; decoded {modality.summary(res.metrics)}")
        report(f"  model: {res.n_params} parameters in {len(res.configs)} section(s); {describe(res.configs[0])}")
        if res.restarts:
            report(f"  fitting recovered from {res.restarts} divergence(s)")


def with_options(options):
    def apply(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


limit_options = [
    click.option("--max-samples", "--max-pixels", "max_samples", type=click.IntRange(min=1),
                 help="Refuse a stream that decodes to more samples in memory (an image's pixels, audio frames x "
                      "channels; latent audio, written as it decodes, is bounded by --max-work) [default: 2^27]."),
    click.option("--max-work", type=click.FloatRange(min=1),
                 help="Refuse a stream whose networks need more multiply-adds in all, e.g. 1e12 [default: 2^46]."),
    click.option("--max-macs", type=click.IntRange(min=1),
                 help="Refuse a stream whose network needs more multiply-adds per sample [default: 2^20]."),
    click.option("--max-faces", type=click.IntRange(min=1), help="Shapes: refuse a surface with more faces [default: 2^26]."),
    click.option("--max-table-work", type=click.IntRange(min=1),
                 help="Refuse a stream whose frequency tables cost more to build (SPEC.md section 1) [default: 2^30]."),
]


def _limits(max_samples: int | None, max_work: float | None, max_macs: int | None, max_faces: int | None,
            max_table_work: int | None) -> Limits:
    """The spec's decoding limits, lowered by the --max-* options given."""
    if max_work is not None and not max_work >= 1:  # FloatRange lets NaN through
        raise UsageError(f"--max-work must be a number of at least 1, not {max_work}")
    return Limits().lowered(max_samples=max_samples, max_work=None if max_work is None else int(min(max_work, 2.0**62)),
                            max_macs=max_macs, max_faces=max_faces, max_table_work=max_table_work)


@main.command()
@click.argument("source", type=click.Path(readable=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Output file; its extension by kind of stream: image .png; audio .wav; shape .ply or .obj or .stl; "
                   "- for standard output, as the first of these [default: SOURCE's name with .decoded and the first "
                   "of these, e.g. photo.decoded.png; standard output when SOURCE is -].")
@device_option
@click.option("--resolution", type=int, help="Shapes: marching-cubes grid size per axis (8..1024) [default: 256].")
@with_options(limit_options)
@force_option
@user_errors
def decode(source: Path, output: Path | None, device: str, resolution: int | None, max_samples: int | None,
           max_work: float | None, max_macs: int | None, max_faces: int | None, max_table_work: int | None,
           force: bool) -> None:
    """Decode an .nxc stream (- for standard input) back to a signal file (a shape as PLY, OBJ or STL by the
    output's extension).

    A stream is checked against the decoding limits before any work; the --max-* options
    lower them (for a service that decodes strangers' files).
    """
    limits = _limits(max_samples, max_work, max_macs, max_faces, max_table_work)
    if output is None and is_stdio(source):
        output = Path(STDIO)
    to_stdout = is_stdio(output)
    if to_stdout:
        check_stdout()
    data = read_stream(source)
    output = output or decoded_path(source, output_kind(data))
    options = {"resolution": resolution} if resolution is not None else {}
    t0 = time.perf_counter()
    if to_stdout:
        decoded = decode_to_stdout(data, device, limits, **options)
    else:
        decoded = decode_to_file(data, output, force, device, limits, **options)
    seconds = time.perf_counter() - t0
    click.echo(f"{display_name(source)} -> {display_name(output, True)}: "
               f"{decoded.modality.describe(decoded.descriptor)} ({seconds:.2f} s)", err=to_stdout)


@main.command()
@click.argument("source", type=click.Path(readable=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (version, kind of signal, descriptor fields, rate, the lines below) "
                   "instead of text [default: text].")
@user_errors
def info(source: Path, as_json: bool) -> None:
    """Show a stream's header, section sizes, rate and model, without decoding it (SOURCE - reads standard input)."""
    data = read_stream(source)
    facts = describe_stream(data)
    if as_json:
        click.echo(json.dumps({"file": display_name(source), **facts}))
        return
    click.echo(f"file:       {display_name(source)} ({len(data)} bytes)")
    click.echo(f"format:     nxc version {data[4]}" + (" (latent grids)" if facts["latent_grids"] else ""))
    for label, text in facts["summary"]:
        click.echo(f"{label + ':' if label else '':11s} {text}")


def _run_batch_cli(kind: str, src: Path, dst: Path, settings, resume: bool, force: bool, workers: int,
                   device: str, devices: str | None, ray_address: str | None, limits: Limits | None = None) -> None:
    from nxcodec.batch import run_batch

    device_list = [d.strip() for d in devices.split(",") if d.strip()] if devices else None
    bar = None

    def on_start(total: int, todo: int) -> None:
        nonlocal bar
        if total - todo:
            click.echo(f"{total - todo} of {total} files already done; {todo} to go", err=True)
        if sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=todo, unit="file", file=sys.stderr, dynamic_ncols=True)

    def on_record(rec) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"{rec.source} {rec.status}")
        elif rec.status != "ok":
            named = rec.error.split(": ", 1)[0].endswith(rec.source)  # the reader's message names the file already
            click.echo(rec.error if named else f"{rec.source}: {rec.error}", err=True)

    summary = run_batch(kind, src, dst, settings, resume=resume, force=force, device=device, devices=device_list,
                        workers=workers, on_record=on_record, on_start=on_start, ray_address=ray_address,
                        limits=limits, coding_workers=None)
    if bar is not None:
        bar.close()
    ok = [r for r in summary.records if r["status"] == "ok"]
    in_bytes = sum(r["source_bytes"] for r in ok)
    out_bytes = sum(r["output_bytes"] for r in ok)
    done_now = summary.ok + summary.failed
    rate = 60 * done_now / summary.seconds if summary.seconds > 0 and done_now else 0.0
    click.echo(f"files:   {summary.total} found, {summary.skipped} already done, {summary.ok} done now, "
               f"{summary.failed} failed")
    click.echo(f"bytes:   {in_bytes} in, {out_bytes} out" + (f" ({in_bytes / out_bytes:.1f}:1)" if out_bytes else ""))
    psnrs = [r["psnr"] for r in ok if r.get("psnr") is not None]
    if psnrs:
        click.echo(f"quality: mean PSNR {sum(psnrs) / len(psnrs):.2f} dB")
    click.echo(f"time:    {summary.seconds:.1f} s ({rate:.1f} files per minute)")
    click.echo(f"manifest: {dst / 'manifest.jsonl'} and {dst / 'manifest.csv'}")
    if summary.failed:
        _fail(f"{summary.failed} file(s) failed; their errors are in {dst / 'manifest.jsonl'}", 1)


batch_options = [
    click.argument("src", type=click.Path(readable=False, path_type=Path)),
    click.argument("dst", type=click.Path(path_type=Path)),
    click.option("--resume", is_flag=True, help="Finish an interrupted batch: skip verified outputs, redo the rest."),
    click.option("--force", is_flag=True,
                 help="Start over in a DST that already holds a batch, and replace files in the way of its outputs "
                      "[default: refuse both]."),
    click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Worker processes, all on --device."),
    device_option,
    click.option("--devices", help="One worker per device, e.g. cuda:0,cuda:1 (overrides --workers and --device) "
                                   "[default: none]."),
    click.option("--ray", "ray_address", metavar="ADDRESS",
                 help="Run on a Ray cluster: 'auto', an address, or 'local' for a local instance "
                      "(pip install 'nxcodec[ray]') [default: no Ray]."),
]


@main.command()
@with_options(batch_options)
@click.option("-q", "--quality", type=click.IntRange(1, 9), default=DEFAULT_QUALITY, show_default=True, help="1 (smallest) to 9 (best).")
@click.option("--bpp", type=float, help="Rate target for every image, in bits per pixel (others use --quality).")
@click.option("--kbps", type=float, help="Rate target for every audio clip, in kbps (others use --quality).")
@click.option("--kb", type=float, help="Size target for every shape, in kilobytes (others use --quality).")
@click.option("--iters", type=click.IntRange(min=1), help="Fitting iterations (overrides the preset's budget).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed for every file.")
@click.option("--group", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Files fitted side by side by one worker (same-sized files share each optimizer step; "
                   "fills a GPU with small files).")
@user_errors
def batch(src: Path, dst: Path, resume: bool, force: bool, workers: int, device: str, devices: str | None,
          ray_address: str | None, quality: int, bpp: float | None, kbps: float | None, kb: float | None,
          iters: int | None, seed: int, group: int) -> None:
    """Compress every supported file under SRC into DST/<relative path>.nxc, with a manifest."""
    from nxcodec.batch import EncodeSettings

    rates = {unit: value for unit, value in (("bpp", bpp), ("kbps", kbps), ("KB", kb)) if value is not None}
    _run_batch_cli("encode", src, dst, EncodeSettings(quality, rates, iters, seed, group), resume, force, workers,
                   device, devices, ray_address)


@main.command("batch-decode")
@with_options(batch_options)
@with_options(limit_options)
@user_errors
def batch_decode(src: Path, dst: Path, resume: bool, force: bool, workers: int, device: str, devices: str | None,
                 ray_address: str | None, max_samples: int | None, max_work: float | None, max_macs: int | None,
                 max_faces: int | None, max_table_work: int | None) -> None:
    """Decode every .nxc under SRC into DST, mirroring the tree, with a manifest (streams beyond the limits: errors)."""
    _run_batch_cli("decode", src, dst, None, resume, force, workers, device, devices, ray_address,
                   _limits(max_samples, max_work, max_macs, max_faces, max_table_work))


workers_option = click.option(
    "--workers", type=click.IntRange(min=1),
    help="Processes measuring the baselines while nxcodec fits [default: all cores but one on a GPU machine, 1 "
         "otherwise].")


@main.group()
def bench() -> None:
    """Rate-distortion benchmarks against the codecs people use instead."""


def _number_list(text: str | None, option: str, kind: type, example: str, valid, what: str) -> tuple | None:
    """A comma-separated option value as a tuple of ``kind`` (None when the option is absent)."""
    if not text:
        return None
    try:
        values = tuple(kind(v) for v in text.split(","))
    except ValueError:
        raise NxcError(f"{option} takes comma-separated numbers, e.g. {example}") from None
    if not all(valid(v) for v in values):
        raise NxcError(f"{option}: {what}")
    return values


def _qualities(text: str | None) -> tuple[int, ...] | None:
    return _number_list(text, "--qualities", int, "1,3,5,7", lambda v: 1 <= v <= 9, "qualities must be within 1..9")


@bench.command("image")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Results folder (resumable).")
@click.option("--quick", is_flag=True, help="4 images at half size, 4 qualities, short fits: minutes on a CPU.")
@click.option("--qualities", help="nxcodec quality points, e.g. 1,3,5,7,9 [default: 1,3,5,7,9].")
@click.option("--iters", type=click.IntRange(min=1), help="Fitting iterations for every point (default: the presets').")
@click.option("--images", "max_images", type=click.IntRange(min=1), help="Only the first N images (sorted by name).")
@click.option("--group", type=click.IntRange(min=1),
              help="Images fitted side by side per quality [default: 32 on a GPU, 1 on a CPU].")
@workers_option
@device_option
@user_errors
def bench_image(src: Path, out: Path, quick: bool, qualities: str | None, iters: int | None, max_images: int | None,
                group: int | None, workers: int | None, device: str) -> None:
    """nxcodec against JPEG, WebP and AVIF on every image of SRC, with BD-rates."""
    from nxcodec.bench.image import BenchConfig, list_images, run

    if not src.is_dir():
        raise InputError(f"{src}: not a directory")
    cfg = BenchConfig.quick(src, out, device) if quick else BenchConfig(src, out, device=device)
    cfg.qualities = _qualities(qualities) or cfg.qualities
    cfg.iters = iters or cfg.iters
    cfg.max_images = max_images or cfg.max_images
    cfg.group, cfg.workers = group or cfg.group, workers or cfg.workers
    if not list_images(cfg):
        raise InputError(f"{src}: no images")
    run(cfg, log=lambda line: click.echo(line, err=True))
    click.echo((out / "bdrate.md").read_text().rstrip())
    click.echo(f"results: {out}/nxcodec.json, jpeg.json, webp.json, avif.json, per_image.csv, sheet_*.png")


def _kbps_list(text: str | None) -> tuple[float, ...] | None:
    return _number_list(text, "--kbps", float, "8,16,24,32", lambda v: v > 0, "rates must be positive")


@bench.command("audio")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Results folder (resumable).")
@click.option("--quick", is_flag=True, help="The middle 1.45 s of each clip, 4 rates, 400-iteration fits: a CPU-sized run.")
@click.option("--kbps", "kbps", help="nxcodec rate targets, e.g. 8,16,24,32 [default: 8,12,16,24,32,48].")
@click.option("--iters", type=click.IntRange(min=1), help="Fitting iterations for every point (default: the presets').")
@click.option("--clips", "max_clips", type=click.IntRange(min=1), help="Only the first N clips (sorted by name).")
@click.option("--seconds", "max_seconds", type=click.FloatRange(min=0.01), help="Keep the middle N seconds of every clip.")
@click.option("--group", type=click.IntRange(min=1),
              help="Clips fitted together per rate (all their windows in one stack) [default: all on a GPU, 1 on a CPU].")
@workers_option
@device_option
@user_errors
def bench_audio(src: Path, out: Path, quick: bool, kbps: str | None, iters: int | None, max_clips: int | None,
                max_seconds: float | None, group: int | None, workers: int | None, device: str) -> None:
    """nxcodec against MP3, Opus and FLAC on every clip of SRC, with BD-rates."""
    from nxcodec.bench.audio import AudioBenchConfig, list_clips, run

    if not src.is_dir():
        raise InputError(f"{src}: not a directory")
    cfg = AudioBenchConfig.quick(src, out, device) if quick else AudioBenchConfig(src, out, device=device)
    cfg.kbps = _kbps_list(kbps) or cfg.kbps
    cfg.iters = iters or cfg.iters
    cfg.max_clips = max_clips or cfg.max_clips
    cfg.max_seconds = max_seconds or cfg.max_seconds
    cfg.group, cfg.workers = group or cfg.group, workers or cfg.workers
    if not list_clips(cfg):
        raise InputError(f"{src}: no audio clips")
    run(cfg, log=lambda line: click.echo(line, err=True))
    click.echo((out / "bdrate.md").read_text().rstrip())
    click.echo(f"results: {out}/nxcodec.json, mp3.json, opus.json, flac.json, per_clip.csv, rd.png")


@bench.command("shape")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Results folder (resumable).")
@click.option("--quick", is_flag=True, help="4 qualities, short fits, a thinner Draco grid: a CPU run.")
@click.option("--qualities", help="nxcodec quality points, e.g. 1,3,5,7,9 [default: 1,3,5,7,9].")
@click.option("--iters", type=click.IntRange(min=1), help="Fitting iterations for every point (default: the presets').")
@click.option("--meshes", "max_meshes", type=click.IntRange(min=1), help="Only the first N meshes (sorted by name).")
@click.option("--group", type=click.IntRange(min=1),
              help="Meshes fitted side by side per quality [default: all on a GPU, 1 on a CPU].")
@workers_option
@device_option
@user_errors
def bench_shape(src: Path, out: Path, quick: bool, qualities: str | None, iters: int | None, max_meshes: int | None,
                group: int | None, workers: int | None, device: str) -> None:
    """nxcodec against Draco and Draco after decimation on every mesh of SRC, with bytes at equal Chamfer."""
    from nxcodec.bench.shape import ShapeBenchConfig, check_source, list_meshes, run

    check_source(src)
    cfg = ShapeBenchConfig.quick(src, out, device) if quick else ShapeBenchConfig(src, out, device=device)
    cfg.qualities = _qualities(qualities) or cfg.qualities
    cfg.iters = iters or cfg.iters
    cfg.max_meshes = max_meshes or cfg.max_meshes
    cfg.group, cfg.workers = group or cfg.group, workers or cfg.workers
    if not list_meshes(cfg):
        raise InputError(f"{src}: no meshes")
    run(cfg, log=lambda line: click.echo(line, err=True))
    click.echo((out / "table.md").read_text().rstrip())
    click.echo(f"results: {out}/nxcodec.json, draco.json, draco_decimated.json, per_mesh.csv, shape_rd.png")


@main.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="PNG to write.")
@click.option("--published", type=click.Path(file_okay=False, path_type=Path),
              help="Folder of published curves [default: bench/published of the source tree].")
@click.option("--no-published", is_flag=True, help="Draw only the given results.")
@click.option("--title", default="Kodak", show_default=True, help="Title drawn above the plot (the dataset's name).")
@user_errors
def plot(results: tuple[Path, ...], output: Path, published: Path | None, no_published: bool, title: str) -> None:
    """PSNR-vs-bpp curves of result JSONs (CompressAI format), beside published codecs."""
    import json

    from nxcodec.bench.plot import PUBLISHED, plot_rd

    try:
        plot_rd(list(results), output, None if no_published else (published or PUBLISHED), title)
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"not a results JSON in CompressAI's format ({exc})") from None
    click.echo(f"wrote {output}")


@main.command()
@click.option("--iters", type=click.IntRange(min=1),
              help=f"Fitting iterations [default: {DEMO_CPU_ITERS} on a CPU, to keep the demo to minutes; the "
                   "preset's on a GPU].")
@device_option
@click.option("--sheet", type=click.Path(dir_okay=False, path_type=Path), default=Path("nxcodec-demo.png"),
              show_default=True, help="Side-by-side PNG to write (replaced if it exists).")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), help="Also write the .nxc and decoded PNG here.")
@user_errors
def demo(iters: int | None, device: str, sheet: Path, keep: Path | None) -> None:
    """Compress the bundled sample image and compare with JPEG, WebP and AVIF at the same size."""
    from PIL import Image

    from nxcodec.baselines import NAMES
    from nxcodec.sheet import equal_bytes_sheet

    check_writable(sheet, force=True)  # a missing folder fails now, not after the encode
    from nxcodec.codec import resolve_device

    if iters is None and resolve_device(device).type == "cpu":
        iters = DEMO_CPU_ITERS
    res = encode_file(SAMPLE, iters=iters, device=device, progress=sys.stderr.isatty())
    decoded, array = decode_stream(res.data)
    original = Image.open(SAMPLE).convert("RGB")
    click.echo(f"sample: {SAMPLE.name} ({original.width}x{original.height}), encoded on {res.device} "
               f"in {res.encode_seconds:.1f} s; each codec at its largest file not above nxcodec's")
    baselines = equal_bytes_sheet(sheet, original, len(res.data), array, res.metrics["psnr"])
    click.echo(f"{'codec':8s} {'bytes':>6s} {'bpp':>6s} {'PSNR dB':>8s}  setting")
    click.echo(f"{'nxcodec':8s} {len(res.data):6d} {res.rate:6.3f} {res.metrics['psnr']:8.2f}  quality {DEFAULT_QUALITY}")
    for p in baselines:
        note = "" if p.n_bytes <= len(res.data) else " (its smallest file, still larger than nxcodec's)"
        click.echo(f"{NAMES[p.codec]:8s} {p.n_bytes:6d} {p.bpp:6.3f} {p.psnr:8.2f}  quality {p.quality}{note}")
    click.echo(f"side by side: {sheet.resolve()}")
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(keep / "hopper.nxc", res.data, force=True)
        write_atomic(keep / "hopper.png", lambda tmp: decoded.modality.write(decoded.descriptor, array, tmp), force=True)


if __name__ == "__main__":
    main()
