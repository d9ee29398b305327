"""The ``depthmap`` command line: ``depthmap predict PHOTO_OR_DIR... --out DIR``, ``depthmap stereo
PHOTO_OR_DIR... --out DIR``, ``depthmap video VIDEO``, ``depthmap serve``, ``depthmap worker``.

Every field of ``Options`` becomes a flag with the same name (``clahe_clip`` -> ``--clahe-clip``), so
the CLI, the web form and the API share one set of names, defaults and ranges.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import click
import numpy as np

from . import config
from .depth.cpus import plan, usable_cpus
from .depth.registry import DEFAULT_MODEL, MODEL_NAMES, parse_model_list, spec
from .options import NormalOptions, OptionError, Options, StereoOptions, VideoOptions
from .imaging.pipeline import ImageError, Prediction, encode_png, predict, render_views

log = logging.getLogger("depthmap")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".mpo", ".heic", ".heif",
                  ".avif"}
# "auto" and app.depth.model.ENGINES, spelled out so that --help does not need to import torch
ENGINES = ("auto", "torchscript", "eager", "bf16", "onnxruntime", "openvino", "openvino-fp32")


def setting_option(flag: str, env: str, help: str, **extra: Any) -> Callable[..., Any]:
    """A flag whose environment variable and default are those of ``app.config``'s setting ``env``."""
    return click.option(flag, envvar=env, default=config.BY_ENV[env].default, show_default=True,
                        help=f"{help} [env {env}]", **extra)


def engine_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return setting_option("--engine", "DEPTHMAP_ENGINE",
                          "how the network runs: auto (the fastest exact engine installed: with AVX-512 "
                          "openvino-fp32 first, with AVX2 onnxruntime first, else torchscript), "
                          "torchscript (fp32, the PyTorch path), eager (fp32, plain PyTorch), bf16 (CPUs "
                          "with native bfloat16), onnxruntime (fp32), openvino (bf16 where native, else "
                          "fp32), openvino-fp32; see docs/engines-and-speed.md",
                          type=click.Choice(ENGINES))(func)


def option_flags(func: Callable[..., Any], cls: type = Options) -> Callable[..., Any]:
    """Decorates a click command with one flag per field of ``cls`` (``Options``, ``VideoOptions``)."""
    for f in reversed(fields(cls)):
        flag = "--" + f.name.replace("_", "-")
        meta, default = f.metadata, f.default
        assert default is not MISSING
        if f.type == "bool":
            decl = f"{flag}/--no-{flag[2:]}"
            func = click.option(decl, f.name, default=default, show_default=True,
                                help=meta["help"])(func)
            continue
        extra: Dict[str, Any] = {}
        if meta.get("choices"):
            extra["type"] = click.Choice([str(c) for c in meta["choices"]])
            default = str(default)
        rng = f" [{meta['lo']}..{meta['hi']}]" if meta.get("lo") is not None else ""
        func = click.option(flag, f.name, default=default, show_default=True,
                            help=meta["help"] + rng, **extra)(func)
    return func


WEIGHTS_HELP = ("checkpoint of the model [env MIDAS_WEIGHTS, or DAV2_WEIGHTS for depth-anything-v2-small; "
                "default: user cache, else download]")


def load_model(weights: Optional[str], threads: Optional[int], engine: str, warm_up: bool = True,
               model: str = DEFAULT_MODEL) -> Any:
    """The model called ``model`` for a command, with its weights resolved as the server does (``weights``,
    else its environment variable; DEPTHMAP_WEIGHTS_DOWNLOAD honoured); a missing or corrupt file, a bad
    setting or an engine that cannot run: one line, exit 2."""
    from .depth.model import DepthModel, resolve_weights
    from .depth.registry import WeightsError
    from .depth.engines import EngineError

    m = spec(model)
    try:
        path = resolve_weights(weights or os.environ.get(m.weights_env),
                               download=config.get("DEPTHMAP_WEIGHTS_DOWNLOAD"), model=m)
        return DepthModel.load(path, threads=threads, engine=engine, warm_up=warm_up, model=m)
    except (config.ConfigError, WeightsError, EngineError) as exc:
        log.error("%s", exc)
        sys.exit(2)


def on_loopback(bind: str) -> bool:
    """Whether a ``--bind`` address (``host:port``, ``[v6]:port``, ``unix:path``) is this machine's only."""
    if bind.startswith("unix:"):
        return True
    host = bind.rpartition(":")[0].strip("[]") or "0.0.0.0"
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: whatever it resolves to may be reachable
        return False


def model_list(models: Tuple[str, ...]) -> Tuple[str, ...]:
    """The ``--model`` flags given, else DEPTHMAP_MODELS; a bad name: one line, exit 2."""
    try:
        return parse_model_list(",".join(models) or config.get("DEPTHMAP_MODELS"))
    except ValueError as exc:
        log.error("DEPTHMAP_MODELS: %s", exc)
        sys.exit(2)


def models_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--model", "models", multiple=True, type=click.Choice(MODEL_NAMES),
                        help="a model to load; repeat for several, the first is the default of requests "
                             "[env DEPTHMAP_MODELS, comma-separated; default: midas-small]")(func)


def collect_inputs(paths: Iterable[str]) -> List[Path]:
    """Files as given, plus the images directly inside each given folder (sorted)."""
    out: List[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(c for c in p.iterdir() if c.is_file() and c.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                log.warning("no images in folder %s", p)
            out.extend(found)
        else:
            out.append(p)
    return out


def output_stems(inputs: List[Path]) -> List[str]:
    """File stems, made unique (``a``, ``a-2``) so two photos never overwrite each other's results."""
    seen: Dict[str, int] = {}
    stems = []
    for p in inputs:
        n = seen.get(p.stem, 0) + 1
        seen[p.stem] = n
        stems.append(p.stem if n == 1 else f"{p.stem}-{n}")
    return stems


def parse_options(raw: Dict[str, Any], *classes: type) -> List[Any]:
    """One instance of each options class from the flags in ``raw`` that belong to it; a bad value is a
    usage error (exit 2) naming its flag."""
    out = []
    try:
        for cls in classes:
            names = set(cls.names())
            out.append(cls.from_strings({k: str(v) for k, v in raw.items() if k in names}))
    except OptionError as exc:
        raise click.BadParameter(exc.message, param_hint="--" + exc.name.replace("_", "-")) from None
    return out


def each_photo(inputs: Tuple[str, ...], out_dir: str, model_args: Tuple[Optional[str], Optional[int], str],
               opts: Options, write: Callable[[Prediction, Path, str], None]) -> None:
    """Runs the depth of every photo in ``inputs`` and ``write(prediction, out, stem)``; a photo that
    fails is logged and the others go on. Exits 0 only if every photo succeeded."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    files = collect_inputs(inputs)
    if not files:
        raise click.UsageError("no photos to process")
    # one photo at a time: the usual shapes' warm-up would cost more than it saves
    model = load_model(*model_args, warm_up=False, model=opts.model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    with logging_redirect_tqdm():
        for path, stem in zip(tqdm(files, unit="photo", desc="depth", disable=None),
                              output_stems(files), strict=True):
            try:
                result = predict(path.read_bytes(), model, opts)
                write(result, out, stem)
                log.debug("%s: %s", path, result.timings_ms)
            except (OSError, ImageError) as exc:  # unreadable input, bad image, or a failed write
                failed += 1
                log.error("%s: %s", path, getattr(exc, "message", None) or exc)
            except Exception:  # noqa: BLE001 - a bug on one photo must not cost the others
                failed += 1
                log.exception("%s: unexpected error", path)
    log.info("%d of %d photos done, results in %s", len(files) - failed, len(files), out)
    sys.exit(1 if failed else 0)


def photo_command(name: str) -> Callable[..., Any]:
    """The arguments and flags every photo command shares: photos, --out, --weights, --threads, --engine
    and one flag per ``Options`` field."""
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        func = option_flags(func)
        func = engine_option(func)
        func = click.option("--threads", envvar="DEPTHMAP_TORCH_THREADS", type=click.IntRange(1, 256),
                            help="inference threads [env DEPTHMAP_TORCH_THREADS; default: all cores]")(func)
        func = click.option("--weights", type=click.Path(dir_okay=False), help=WEIGHTS_HELP)(func)
        func = click.option("--out", "out_dir", default="depth-out", show_default=True,
                            type=click.Path(file_okay=False),
                            help="folder for the results (created if missing)")(func)
        func = click.argument("inputs", nargs=-1, required=True, metavar="PHOTO_OR_DIR...")(func)
        return main.command(name)(func)
    return decorate


@click.group()
@click.version_option(package_name="depthmap-studio")
@click.option("-v", "--verbose", is_flag=True, help="log debug details")
def main(verbose: bool) -> None:
    """Monocular depth maps from photos with MiDaS v2.1 small or Depth Anything V2 Small."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    # the task queue logs every task it runs (the minute's sweep too); the jobs log themselves
    logging.getLogger("huey").setLevel(logging.DEBUG if verbose else logging.WARNING)


@photo_command("predict")
@click.option("--exr/--no-exr", default=False, show_default=True,
              help="also write STEM.depth.exr: the raw depth as OpenEXR float32 (for compositors)")
@click.option("--normals/--no-normals", default=False, show_default=True,
              help="also write STEM.normals.png: a normal map of the depth")
@functools.partial(option_flags, cls=NormalOptions)
def predict_cmd(inputs: Tuple[str, ...], out_dir: str, weights: str, threads: int, engine: str, exr: bool,
                normals: bool, **raw: Any) -> None:
    """Write STEM.heatmap.png, STEM.overlay.png, STEM.gray.png and STEM.depth.npy per photo.

    depth.npy is float32 H x W: the network output upsampled (see --upsample) to the photo's size, not
    normalised; relative inverse depth, larger = nearer. Exit code 0 only if every photo succeeded.
    """
    from .imaging.exports import depth_exr
    from .imaging.normals import normal_map

    opts, nopts = parse_options(raw, Options, NormalOptions)

    def write(result: Prediction, out: Path, stem: str) -> None:
        for view, img in render_views(result.photo, result.depth, opts).items():
            (out / f"{stem}.{view}.png").write_bytes(encode_png(img, view))
        np.save(out / f"{stem}.depth.npy", result.depth)
        if exr:
            (out / f"{stem}.depth.exr").write_bytes(depth_exr(result.depth))
        if normals:
            (out / f"{stem}.normals.png").write_bytes(encode_png(normal_map(result.depth, nopts), "normals"))

    each_photo(inputs, out_dir, (weights, threads, engine), opts, write)


@photo_command("stereo")
@functools.partial(option_flags, cls=StereoOptions)
def stereo_cmd(inputs: Tuple[str, ...], out_dir: str, weights: str, threads: int, engine: str,
               **raw: Any) -> None:
    """Write STEM.LAYOUT.png per photo: a stereo 3D image made from the photo and its depth.

    Each pixel moves sideways by its depth (--divergence, % of the width, between the nearest and the
    farthest point; --convergence, the depth on the screen plane); what a near object uncovers is
    filled from the background. Layouts: sbs (full side-by-side, for VR players), sbs-half (3D TVs),
    top-bottom, cross-eyed (free viewing), anaglyph-dubois and anaglyph (red-cyan glasses). Exit code 0
    only if every photo succeeded.
    """
    from .imaging.stereo import stereo

    opts, sopts = parse_options(raw, Options, StereoOptions)

    def write(result: Prediction, out: Path, stem: str) -> None:
        image = stereo(result.photo, result.depth, sopts)
        (out / f"{stem}.{sopts.layout}.png").write_bytes(encode_png(image, "photo"))  # photographic rows

    each_photo(inputs, out_dir, (weights, threads, engine), opts, write)


@main.command("video")
@click.argument("source", metavar="VIDEO", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="the depth video (H.264 MP4) [default: VIDEO's name with .depth.mp4, here]")
@click.option("--weights", type=click.Path(dir_okay=False), help=WEIGHTS_HELP)
@click.option("--threads", envvar="DEPTHMAP_TORCH_THREADS", type=click.IntRange(1, 256),
              help="torch threads [env DEPTHMAP_TORCH_THREADS; default: all cores]")
@engine_option
@option_flags
@functools.partial(option_flags, cls=VideoOptions)
def video_cmd(source: str, out_path: str, weights: str, threads: int, engine: str, **raw: Any) -> None:
    """Turn VIDEO (MP4, WebM, MOV, AVI, MKV, animated GIF) into a depth video.

    Each frame's depth is blended with the previous ones (--ema), smoothed with an edge-preserving
    bilateral filter (--bilateral) and shown with one range for the whole clip (--norm clip; two passes
    over the file, the network runs once per frame). With --depth-zip, the depth as 16-bit PNGs goes
    beside OUT (walk.mp4 or walk.depth.mp4 -> walk.depth.zip). Exit code 0 on success (a warning if
    the file ended early), 1 if the video could not be processed, 2 for a usage error or missing
    weights.
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .imaging.video import VideoError, probe, process_video

    opts, vopts = parse_options(raw, Options, VideoOptions)
    src = Path(source)
    out = Path(out_path) if out_path else Path(src.stem + ".depth.mp4")
    try:
        info = probe(src)
    except VideoError as exc:
        log.error("%s: %s", src, exc.message)
        sys.exit(1)
    model = load_model(weights, threads, engine, model=opts.model)
    log.info("%s: %dx%d, %d frames at %.3g fps", src, info.width, info.height, info.frames, float(info.fps))
    bars: Dict[int, Any] = {}
    names = {1: "depth", 2: "render"}

    def progress(pass_no: int, passes: int, done: int, total: int) -> None:
        bar = bars.get(pass_no)
        if bar is None:
            for previous in bars.values():
                previous.close()
            desc = f"pass {pass_no}/{passes} {names[pass_no] if passes == 2 else 'frames'}"
            bar = bars[pass_no] = tqdm(total=total, unit="frame", desc=desc, disable=None)
        bar.total = total
        bar.update(done - bar.n)

    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with logging_redirect_tqdm():
            result = process_video(src, out, model, opts, vopts, info=info, progress=progress)
    except VideoError as exc:
        log.error("%s: %s", src, exc.message)
        sys.exit(1)
    except OSError as exc:  # a failed write
        log.error("%s: %s", out, exc)
        sys.exit(1)
    finally:
        for bar in bars.values():
            bar.close()
    if result.warning:
        log.warning("%s: %s", src, result.warning)
    log.debug("seconds per stage: %s", result.seconds)
    total_s = sum(result.seconds.values())
    log.info("%d frames, %dx%d at %.3g fps -> %s%s (%.1f frames/s)", result.frames, result.width,
             result.height, result.fps, out, f" and {result.depth_zip}" if result.depth_zip else "",
             result.frames / total_s if total_s else 0.0)
    sys.exit(0)


@main.command("serve")
@setting_option("--bind", "DEPTHMAP_BIND", "address:port to listen on; 0.0.0.0:8000 for every interface")
@click.option("--workers", envvar="DEPTHMAP_WORKERS", type=click.IntRange(1, 64),
              help="worker processes, each with its own model [env DEPTHMAP_WORKERS; default: usable CPUs "
                   "/ 4, rounded up]")
@setting_option("--threads", "DEPTHMAP_WORKER_THREADS", "request threads per worker",
                type=click.IntRange(1, 64))
@setting_option("--timeout", "DEPTHMAP_TIMEOUT", "seconds before a stuck worker is restarted",
                type=click.IntRange(5, 3600))
@click.option("--weights", type=click.Path(dir_okay=False),
              help="checkpoint of the first --model [env MIDAS_WEIGHTS and DAV2_WEIGHTS, one per model; "
                   "default: user cache, else download]")
@models_option
@setting_option("--embedded-worker/--no-embedded-worker", "DEPTHMAP_EMBEDDED_WORKER",
                "run one video job consumer inside the server (off where `depthmap worker` runs)")
@engine_option
def serve_cmd(bind: str, workers: Optional[int], threads: int, timeout: int, weights: str,
              models: Tuple[str, ...], embedded_worker: bool, engine: str) -> None:
    """Serve the web studio and the API with gunicorn (config: app/serving/gunicorn_conf.py)."""
    from .depth.torch_engines import cached_onnx, load_network
    from .depth.model import cache_dir, file_digest, resolve_weights
    from .depth.registry import WeightsError
    from .depth.engines import ONNX_ENGINES, engine_problem, resolve_engine

    names = model_list(models)
    try:
        config.trusted_host_names(config.get("DEPTHMAP_TRUSTED_HOSTS"))
    except config.ConfigError as exc:
        log.error("%s", exc)
        sys.exit(2)
    for name in names:
        problem = engine_problem(engine, model=name)  # one clear line here, not a traceback per worker
        if problem:
            log.error("%s: %s", name, problem)
            sys.exit(2)

    # find (or download) the weights once, here: a missing file is one clear line and exit code 2
    # rather than a traceback per worker, and several workers never download at the same time
    download = config.get("DEPTHMAP_WEIGHTS_DOWNLOAD")
    paths, nets = {}, {}
    for i, name in enumerate(names):
        m = spec(name)
        try:
            path = resolve_weights((weights if i == 0 else None) or os.environ.get(m.weights_env),
                                   download=download, model=m)
            # a corrupt or foreign file stops here, not in every worker's boot
            nets[name] = (load_network(path, m), path)
        except WeightsError as exc:
            log.error("%s", exc)
            sys.exit(2)
        paths[m.weights_env] = str(path.resolve())
    # the result store: an unusable data folder or Redis URL is one clear line here, and every worker
    # gets the same folder (the default one is chosen once, here)
    from .serving.store import StoreUnavailable, data_dir, open_store, private_dir

    redis_url, folder = config.get("DEPTHMAP_REDIS_URL"), config.get("DEPTHMAP_DATA_DIR")
    try:
        if redis_url:
            open_store(redis_url, None, 0, 1)  # checks the URL; Redis itself may come up later
        else:
            folder = str(private_dir(data_dir(folder, config.get("DEPTHMAP_CACHE_BYTES"))))
            os.environ["DEPTHMAP_DATA_DIR"] = folder
        if config.get("DEPTHMAP_VIDEO_DIR"):  # the video jobs' folder, checked as the data folder is
            private_dir(Path(config.get("DEPTHMAP_VIDEO_DIR")))
    except StoreUnavailable as exc:
        log.error("%s", exc.message)
        sys.exit(2)
    for name, (net, path) in nets.items():
        if resolve_engine(engine, name) in ONNX_ENGINES:
            # exported once, here, before the workers start: a worker that finds its export (and Depth
            # Anything V2's position embedding, kept beside it) never imports torch (about 200 MB less
            # each), and no two workers export at the same time
            cached_onnx(net, file_digest(path, "sha256"), cache_dir() / "onnx")
    # glibc gives each thread that allocates its own heap and keeps what is freed there: with request,
    # encoder and OpenMP threads a worker held about 90 MB more after a 12 MP request
    # (docs/configuration.md, "Process environment")
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    cpus = usable_cpus()
    workers, torch_threads = plan(cpus, workers, config.get("DEPTHMAP_TORCH_THREADS"))
    env = dict(os.environ, DEPTHMAP_BIND=bind, DEPTHMAP_WORKERS=str(workers),
               DEPTHMAP_WORKER_THREADS=str(threads), DEPTHMAP_TIMEOUT=str(timeout),
               DEPTHMAP_TORCH_THREADS=str(torch_threads),
               DEPTHMAP_EMBEDDED_WORKER=str(embedded_worker).lower(), DEPTHMAP_ENGINE=engine,
               DEPTHMAP_MODELS=",".join(names), **paths)
    conf = Path(__file__).parent / "serving" / "gunicorn_conf.py"
    argv = [sys.executable, "-m", "gunicorn", "--config", str(conf), "app:create_app()"]
    if not on_loopback(bind):
        log.warning("%s is reachable from other machines unless a firewall or a container's port mapping "
                    "keeps them out: the studio has no accounts and no TLS; to serve others, put a reverse "
                    "proxy with TLS and authentication in front (docs/self-hosting.md, \"Threat model\")",
                    bind)
    log.info("starting gunicorn on http://%s (%d worker(s) x %d request threads, %d torch threads each on "
             "%d usable CPU(s), models %s, engine %s; results in %s; video jobs: %s)", bind, workers, threads,
             torch_threads, cpus, ", ".join(names), engine, "Redis" if redis_url else folder,
             "embedded consumer" if embedded_worker else "separate `depthmap worker`")
    # exec: gunicorn's master becomes this process, so signals from a terminal, systemd or Docker
    # reach it directly
    os.execve(sys.executable, argv, env)


@main.command("worker")
@click.option("--workers", envvar="DEPTHMAP_VIDEO_WORKERS", type=click.IntRange(1, 64),
              default=config.BY_ENV["DEPTHMAP_VIDEO_WORKERS"].default, show_default=True,
              help="videos processed at once (threads sharing one model) [env DEPTHMAP_VIDEO_WORKERS]")
@click.option("--threads", envvar="DEPTHMAP_TORCH_THREADS", type=click.IntRange(1, 256),
              help="torch threads [env DEPTHMAP_TORCH_THREADS; default: the CPUs this process may use]")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="checkpoint of the first --model [env MIDAS_WEIGHTS and DAV2_WEIGHTS, one per model; "
                   "default: user cache, else download]")
@models_option
@engine_option
def worker_cmd(workers: int, threads: Optional[int], weights: str, models: Tuple[str, ...],
               engine: str) -> None:
    """Run video jobs from the queue (the data dir's, or DEPTHMAP_REDIS_URL's) until stopped.

    The models are loaded once and shared by the worker threads (load the server's: a job for a model
    not loaded here fails). SIGTERM or Ctrl-C: running jobs stop at their next frame and go back to the
    queue. Exit code 2 for missing weights or a bad setting.
    """
    from .serving.jobs import from_settings
    from .serving.store import StoreUnavailable

    names = model_list(models)
    loaded: Dict[str, Any] = {}
    try:
        settings = {**config.app_defaults(), **config.app_environ(), "VIDEO_WORKERS": workers}
        # before the models load: the data folder and the jobs' folder are checked as `serve` checks the
        # data folder (this user's, nobody else's, writable), one clear line and exit code 2 otherwise
        queue = from_settings(settings, lambda: loaded)
    except StoreUnavailable as exc:
        log.error("%s", exc.message)
        sys.exit(2)
    except (config.ConfigError, OSError) as exc:
        log.error("%s", exc)
        sys.exit(2)
    loaded.update({name: load_model(weights if i == 0 else None, threads or usable_cpus(), engine, model=name)
                   for i, name in enumerate(names)})
    log.info("video job worker: %d at once, models %s, %d torch threads, queue %s, files in %s", workers,
             ", ".join(names), next(iter(loaded.values())).threads,
             "Redis" if settings["REDIS_URL"] else "SQLite (the data dir)", queue.root)
    queue.run_consumer()


if __name__ == "__main__":
    main()
