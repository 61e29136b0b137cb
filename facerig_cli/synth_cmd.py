"""``facerig synth``: render a synthetic training corpus, preview it, check it."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from .args import MAX_PREVIEW, MAX_RENDER_COUNT, MAX_WORKERS, add_int


AUGMENT_STEPS = ("background", "occluders", "blur", "color-jitter", "noise", "jpeg")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="synthetic corpus: render, preview, info")
    ssub = p.add_subparsers(dest="synth_command", metavar="ACTION")

    r = ssub.add_parser("render", help="render random faces with exact labels into a sharded corpus "
                        "(rerun the same command to resume; a larger --count extends the corpus)")
    add_int(r, "--count", lo=1, hi=MAX_RENDER_COUNT, required=True, help="number of images in the corpus")
    add_int(r, "--size", lo=32, hi=1024, default=128, help="image side in pixels (default 128)")
    r.add_argument("--out", type=Path, required=True,
                   help="corpus directory (created, or resumed; locked while a render writes it)")
    add_int(r, "--workers", lo=1, hi=MAX_WORKERS, default=1, help="Blender processes, one per core (default 1)")
    add_int(r, "--seed", lo=0, hi=2**63 - 1, default=0, help="random seed (default 0)")
    r.add_argument("--yaw-max", type=float, default=90.0, help="yaw prior half-range in degrees (default 90)")
    r.add_argument("--pitch-max", type=float, default=30.0, help="pitch half-range in degrees (default 30)")
    r.add_argument("--roll-max", type=float, default=20.0, help="roll half-range in degrees (default 20)")
    r.add_argument("--engine", choices=("workbench", "cycles"), default="workbench",
                   help="Blender engine: workbench (fast rasteriser) or cycles (path tracer, slow)")
    add_int(r, "--supersample", lo=1, hi=4, default=1,
            help="anti-aliasing: render at k× the size and area-downsample (default 1 = off)")
    r.add_argument("--workbench-aa", default="OFF", help="Workbench render_aa (OFF, FXAA, 5, 8, …; costly)")
    add_int(r, "--cycles-samples", lo=1, hi=65536, default=8, help="Cycles samples per pixel (default 8)")
    add_int(r, "--shard-size", lo=1, hi=65536, default=256, help="images per shard file (default 256)")
    add_int(r, "--n-identity", lo=0, hi=100, default=100, help="identity modes sampled and stored")
    add_int(r, "--views-per-identity", lo=1, hi=1000, default=1, metavar="K",
            help="K consecutive images show one person (same identity and skin; new pose, expression, "
                        "light, occluders): multi-view sets for the aggregation network (default 1)")
    r.add_argument("--backgrounds", type=Path, help="folder of photos for background crops (no faces)")
    r.add_argument("--no-augment", action="store_true", help="clean renders on black: no augmentation")
    r.add_argument("--disable", action="append", default=[], choices=AUGMENT_STEPS, metavar="STEP",
                   help=f"switch one augmentation step off (repeatable): {', '.join(AUGMENT_STEPS)}")
    r.add_argument("--model", type=Path, help="face model npz (default: $FACERIG_FACE_MODEL, then the cache)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_ray_arg(r, "the shards")
    r.set_defaults(func=cmd_render)

    vw = ssub.add_parser("views", help="render rotated (VRN) and resampled/relit (InverseFaceNet) views of "
                                       "reconstructed photos, with exact labels (resumable)")
    vw.add_argument("--from", dest="source", type=Path, required=True, metavar="RECON_DIR",
                    help="reconstructions (manifest.json + recon.npz, e.g. from facerig bootstrap)")
    vw.add_argument("--out", type=Path, required=True,
                    help="corpus directory (created, or resumed; locked while a render writes it)")
    vw.add_argument("--yaw-offsets", default="-60,-45,-30,-15,15,30,45,60",
                    help="yaw offsets in degrees the rotated views draw from (default ±15…±60)")
    add_int(vw, "--rotations", lo=0, hi=100, default=2, help="rotated views per photo (default 2)")
    add_int(vw, "--relight", lo=0, hi=100, default=1, help="resampled + relit renders per photo (default 1)")
    vw.add_argument("--perturb", default="5,0.05,0.2,0.1,0.02", metavar="SIGMAS",
                    help="InverseFaceNet resampling ROT°,IDENTITY,ALBEDO,EXPRESSION,SH (default 5,0.05,0.2,0.1,0.02)")
    vw.add_argument("--pitch-jitter", type=float, default=10.0, help="± pitch change of rotated views (default 10°)")
    vw.add_argument("--delight-light", choices=("network", "fitted"), default="network",
                    help="lighting divided out of the photo before relighting: the reconstruction's own (default) "
                         "or fitted to its face pixels (a truer albedo; one A/B bootstrap round did not gain)")
    add_int(vw, "--workers", lo=1, hi=MAX_WORKERS, default=2, help="Blender processes (default 2)")
    add_int(vw, "--seed", lo=0, hi=2**63 - 1, default=0, help="random seed (default 0)")
    vw.add_argument("--no-augment", action="store_true", help="no blur/noise/occluders/JPEG")
    vw.add_argument("--model", type=Path, help="face model npz (default: $FACERIG_FACE_MODEL, then the cache)")
    vw.add_argument("--no-progress", action="store_true")
    add_ray_arg(vw, "the views")
    vw.set_defaults(func=cmd_views)

    pv = ssub.add_parser("preview", help="contact sheet PNG with landmarks and parameter histograms")
    pv.add_argument("corpus", type=Path)
    pv.add_argument("-o", "--out", type=Path, help="PNG path (default: CORPUS/preview.png; replaced if it exists)")
    add_int(pv, "-n", "--count", lo=1, hi=MAX_PREVIEW, default=24, help="images on the sheet (default 24)")
    pv.set_defaults(func=cmd_preview)

    info = ssub.add_parser("info", help="print a corpus manifest summary; --verify checks every checksum")
    info.add_argument("corpus", type=Path)
    info.add_argument("--verify", action="store_true")
    info.add_argument("--json", action="store_true", help="print the whole manifest")
    info.set_defaults(func=cmd_info)
    p.set_defaults(func=lambda a: p.print_help() or 2)


def add_ray_arg(p: argparse.ArgumentParser, what: str) -> None:
    """``--ray auto|ADDRESS`` (synth render, synth views, bootstrap's views)."""
    p.add_argument("--ray", metavar="auto|ADDRESS",
                   help=f"render {what} on a Ray cluster (same bytes as locally): auto = $RAY_ADDRESS when set, "
                        "else a new local Ray instance with --workers CPUs; ADDRESS = the head's HOST:PORT "
                        "(pip install 'facerig[cluster]'; docs/scaling.md)")


def _augment_config(args: argparse.Namespace):  # noqa: ANN202 — lazy import keeps --help fast
    from synth.augment import AugmentConfig

    if args.no_augment:
        return AugmentConfig.off()
    cfg = AugmentConfig()
    off = set(args.disable)
    changes: dict = {}
    if "background" in off:
        changes["background_weights"] = {"solid": 1.0}
    if "occluders" in off:
        changes["occluder_p"] = 0.0
    for step, key in (("blur", "blur_p"), ("color-jitter", "color_jitter_p"), ("noise", "noise_p"),
                      ("jpeg", "jpeg_p")):
        if step in off:
            changes[key] = 0.0
    return replace(cfg, **changes)


def cmd_render(args: argparse.Namespace) -> int:
    from facemodel.outputs import check_output_dir
    from synth.render import RenderSettings, render_corpus

    check_output_dir(args.out, "corpus folder")
    settings = RenderSettings(
        count=args.count, size=args.size, seed=args.seed, yaw_max=args.yaw_max, pitch_max=args.pitch_max,
        roll_max=args.roll_max, engine=args.engine, supersample=args.supersample,
        workbench_aa=str(args.workbench_aa).upper(), cycles_samples=args.cycles_samples,
        shard_size=args.shard_size, n_identity=args.n_identity, augment=_augment_config(args),
        backgrounds=args.backgrounds, model_path=args.model, views_per_identity=args.views_per_identity)
    settings.validate()
    report = render_corpus(settings, args.out, workers=args.workers, progress=not args.no_progress, ray=args.ray)
    if report.rendered_images:
        print(f"{report.out}: rendered {report.rendered_images} images in {report.seconds:.1f} s "
              f"({report.images_per_second:.1f} images/s); corpus holds {report.total_images}")
    else:
        print(f"{report.out}: already complete ({report.total_images} images); nothing to render")
    return 0


def cmd_views(args: argparse.Namespace) -> int:
    from facemodel.outputs import check_output_dir
    from synth.augment import AugmentConfig
    from synth.views import Perturbation, ViewSettings, render_views

    check_output_dir(args.out, "corpus folder")
    try:
        offsets = tuple(float(v) for v in args.yaw_offsets.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--yaw-offsets must be comma-separated degrees, got {args.yaw_offsets!r}") from None
    views = ViewSettings(source=args.source, yaw_offsets=offsets, rotations=args.rotations, relight=args.relight,
                         pitch_jitter_deg=args.pitch_jitter, perturb=Perturbation.parse(args.perturb),
                         delight_light=args.delight_light)
    report = render_views(views, args.out, workers=args.workers, seed=args.seed,
                          augment=AugmentConfig(enabled=not args.no_augment), progress=not args.no_progress,
                          model_path=args.model, ray=args.ray)
    print(f"{report.out}: rendered {report.rendered_images} views in {report.seconds:.1f} s "
          f"({report.images_per_second:.1f} images/s); corpus holds {report.total_images}")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from facemodel.outputs import check_output_file
    from synth.preview import write_preview

    check_output_file(args.out or args.corpus / "preview.png", overwrite=True, what="preview")
    out = write_preview(args.corpus, args.out, args.count)
    print(f"preview written to {out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from synth.corpus import open_corpus

    corpus = open_corpus(args.corpus, verify=args.verify)
    m = corpus.manifest
    if args.json:
        print(json.dumps(m, indent=1))
        return 0
    gen = corpus.generator
    print(f"corpus        {corpus.path}")
    print(f"images        {len(corpus)} of {m['counts'].get('requested')} requested, {len(corpus.shards)} shards "
          f"of ≤{corpus.shard_size}")
    print(f"image size    {corpus.image_size}²")
    print(f"layout        v{corpus.layout.version}, {corpus.layout.n_identity} identity modes, "
          f"{corpus.layout.size} parameters")
    print(f"generator     engine {gen.get('engine')}, seed {gen.get('seed')}, pose ±{gen.get('yaw_max')}/"
          f"±{gen.get('pitch_max')}/±{gen.get('roll_max')}°, augment "
          f"{'on' if gen.get('augment', {}).get('enabled') else 'off'}")
    print(f"checksums     {'verified' if args.verify else 'sizes checked (use --verify for sha256)'}")
    return 0
