"""``facerig eval landmarks|synthetic|identity-bound|identity-consistency|same-person|refine-gate`` and ``facerig
bench``: the evaluation harness (issue 6).

JSON keys written here are a stable interface (CI, the model card and docs read them); the
work is done in the ``evaluation`` package.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator

from .args import describe_range, float_range, int_range

log = logging.getLogger(__name__)

REGRESSOR_HELP = "regressor ONNX (default: blender_addon/models/facerig_regressor.onnx)"


def _add_model(parser: argparse.ArgumentParser) -> None:
    """``--model``: every evaluation and the bench take any regressor file, the shipped one by default."""
    parser.add_argument("--model", type=Path, help=REGRESSOR_HELP)


def _add_face_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--face-model", dest="face_model", help="ICT-FaceKit npz (default: $FACERIG_FACE_MODEL/cache)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a regressor: landmarks on labelled photos, synthetic corpora")
    esub = p.add_subparsers(dest="eval_command", metavar="SET")

    lm = esub.add_parser("landmarks", help="68-point NME on images with iBUG .pts files (e.g. 300W Helen test)")
    lm.add_argument("--images", type=Path, required=True, help="folder of images with same-name .pts files")
    lm.add_argument("--json", type=Path, required=True, help="report path; .csv and .png are written beside it")
    _add_model(lm)
    lm.add_argument("--box", choices=("gt", "detect"), default="gt",
                    help="start from the ground-truth landmark box (default) or from the face detector")
    lm.add_argument("--method", choices=("facerig", "mediapipe"), default="facerig",
                    help="facerig's regressor, or MediaPipe FaceMesh mapped to 68 points (peer baseline)")
    lm.add_argument("--contour", choices=("fixed", "visible", "march"), default="march",
                    help="jaw vertices for facerig's 68 points: march (default, best measured: silhouette "
                         "along horizontal lines), fixed (ICT's landmarks_multipie68, what the regressor is "
                         "trained on) or visible (ICT's documented visible-contour set); all three are in "
                         "by_contour")
    lm.add_argument("--refine", action="store_true",
                    help="facerig: refine the prediction on MediaPipe FaceMesh's points (dense fit; inner 51 for "
                         "turned faces), as the add-on and `facerig reconstruct` do by default")
    lm.add_argument("--corrective-prior", type=float_range(0.0), metavar="RHO",
                    help="with --refine: the corrective field's prior strength (1/cm², eigenvalue-weighted; "
                         "default the add-on's, 300; 0 = the field is not fitted; docs/corrective-shapes.md) "
                         f"[{describe_range(0.0, None)}]")
    _add_face_model(lm)
    lm.add_argument("--limit", type=int_range(1), help="only the first N images (sorted by name) [at least 1]")
    lm.add_argument("--no-plot", action="store_true", help="skip the PNG")
    lm.set_defaults(func=cmd_landmarks)

    sy = esub.add_parser("synthetic", help="3-D and landmark errors on a synthetic corpus with ground truth")
    sy.add_argument("--corpus", type=Path, required=True)
    sy.add_argument("--json", type=Path, required=True, help="report path; error-vs-yaw .png beside it")
    _add_model(sy)
    _add_face_model(sy)
    sy.add_argument("--limit", type=int_range(1), help="only the first N samples [at least 1]")
    sy.add_argument("--no-plot", action="store_true")
    sy.set_defaults(func=cmd_synthetic)
    ib = esub.add_parser("identity-bound", help="how well identity could be known from one view's 2-D points "
                         "(exact pose; the reference for the regressor's identity error)")
    ib.add_argument("--corpus", type=Path, required=True)
    ib.add_argument("--json", type=Path, required=True, help="report path")
    ib.add_argument("--limit", type=int_range(1), default=512, help="first N faces (default 512) [at least 1]")
    ib.add_argument("--sigma", type=float, nargs="+", help="pixel noise levels (default 0.5 1 2 4)")
    _add_face_model(ib)
    ib.set_defaults(func=cmd_identity_bound)
    ic = esub.add_parser("identity-consistency", help="does the regressor tell people apart on real photos: "
                         "each face against its mirror image and against every other face (no labels needed)")
    ic.add_argument("--images", type=Path, required=True,
                    help="folder of photos, one person each (with .pts files for --box gt)")
    ic.add_argument("--json", type=Path, required=True, help="report path; a histogram .png beside it")
    _add_model(ic)
    ic.add_argument("--box", choices=("gt", "detect"), default="gt",
                    help="crop from the .pts landmarks (default) or the largest detected face (any photo folder)")
    _add_face_model(ic)
    ic.add_argument("--limit", type=int_range(1), help="only the first N images (sorted by name) [at least 1]")
    ic.add_argument("--refine", action="store_true",
                    help="compare identities refined on FaceMesh's points, as the add-on makes them")
    ic.add_argument("--no-plot", action="store_true")
    ic.set_defaults(func=cmd_identity_consistency)
    sp = esub.add_parser("same-person", help="identity error of several photos of one person (multi-view "
                         "corpus): the network's identities aggregated against identities refined first")
    sp.add_argument("--corpus", type=Path, required=True, help="corpus rendered with --views-per-identity K")
    sp.add_argument("--json", type=Path, required=True, help="report path")
    _add_model(sp)
    sp.add_argument("--cnet", type=Path, help="C-Net ONNX (default: the one the add-on picks for the regressor)")
    sp.add_argument("--scale", type=float, nargs="+",
                    help="FaceMesh's error on the renders is scaled by these (default 0.45 ≈ its photo accuracy, 1)")
    sp.add_argument("--limit", type=int_range(1), help="only the first N sets [at least 1]")
    _add_face_model(sp)
    sp.set_defaults(func=cmd_same_person)
    dt = esub.add_parser("detection", help="faces found by |yaw| on a synthetic corpus, confirmed by FaceMesh or "
                         "from the detector box alone, and how the latter reconstruct")
    dt.add_argument("--corpus", type=Path, required=True)
    dt.add_argument("--json", type=Path, required=True, help="report path")
    _add_model(dt)
    dt.add_argument("--limit", type=int_range(1), help="only the first N renders [at least 1]")
    _add_face_model(dt)
    dt.set_defaults(func=cmd_detection)
    rg = esub.add_parser("refine-gate", help="how far the regressor's landmarks lie from the detector's on "
                         "unlabelled photos, and the limit up to which the refinement trusts the detector")
    rg.add_argument("--images", type=Path, action="append", required=True,
                    help="folder of photos (repeatable; no labels needed)")
    rg.add_argument("--json", type=Path, required=True, help="report path")
    _add_model(rg)
    rg.add_argument("--every", type=int_range(1), default=1,
                    help="every N-th photo of each folder (sorted names) [at least 1]")
    rg.add_argument("--write", action="store_true",
                    help="store the recommended limit in the model's ONNX metadata (weights untouched)")
    _add_face_model(rg)
    rg.set_defaults(func=cmd_refine_gate)
    p.set_defaults(func=lambda a: p.print_help() or 2)

    b = sub.add_parser("bench", help="speed: regressor, photo → params, several photos, photo → Blender, synthesis, "
                       "training")
    b.add_argument("--json", type=Path, required=True)
    _add_model(b)
    b.add_argument("--photo", type=Path, help="photo for the end-to-end timings (default: the built-in astronaut)")
    b.add_argument("--runs", type=int_range(1, 100_000), default=200,
                   help="timed regressor runs (median reported; ≥ 200 for the record) [1…100000]")
    b.add_argument("--photo-runs", type=int_range(1, 100_000), default=300,
                   help="timed photo → params runs (median and per-stage medians reported; default 300) [1…100000]")
    b.add_argument("--corpus", type=Path, help="corpus for train_images_per_s_128 (a short training run)")
    b.add_argument("--only", nargs="*", help="measure only these keys (others are null with a reason)")
    b.set_defaults(func=cmd_bench)


@contextlib.contextmanager
def report_output(path: Path) -> Iterator[None]:
    """The report path checked before the evaluation runs (a folder, an unwritable place: one line), and
    locked while it runs, so two evaluations never write one report (and its .png/.csv) at once. A report
    that exists is replaced: it is a measurement a rerun makes again (docs/robustness.md)."""
    from facemodel.outputs import check_output_file, folder_lock

    check_output_file(path, overwrite=True, what="report")
    with folder_lock(path.parent, f".{path.name}.lock", what=f"the report {path}"):
        yield


def _reporting(cmd: Any) -> Any:
    """``cmd`` run inside :func:`report_output` for its ``--json``."""
    def run(args: argparse.Namespace) -> int:
        with report_output(args.json):
            return cmd(args)

    run.__name__ = run.__qualname__ = cmd.__name__
    run.__doc__ = cmd.__doc__
    return run


@_reporting
def cmd_landmarks(args: argparse.Namespace) -> int:
    from evaluation.landmarks import run

    report = run(args.images, args.json, method=args.method, box_mode=args.box, contour=args.contour,
                 onnx_path=args.model, model_path=args.face_model, limit=args.limit, plot=not args.no_plot,
                 refine=args.refine, corrective_prior=args.corrective_prior)
    _print_summary(report, ("n", "failed", "nme_bbox_68", "nme_bbox_51", "nme_io_68", "nme_io_51",
                            "nme_bbox_68_balanced"))
    return 0


@_reporting
def cmd_synthetic(args: argparse.Namespace) -> int:
    from evaluation.synthetic import run

    report = run(args.corpus, args.json, onnx_path=args.model, model_path=args.face_model, limit=args.limit,
                 plot=not args.no_plot)
    _print_summary(report, ("n", "vertex_mm_camera", "vertex_mm_aligned", "nme_bbox_68", "expression_mae",
                            "rotation_deg"))
    return 0


@_reporting
def cmd_identity_bound(args: argparse.Namespace) -> int:
    from evaluation.identity_bound import DEFAULT_SIGMAS, format_table, run

    sigmas = tuple(args.sigma or DEFAULT_SIGMAS)
    if any(s <= 0 for s in sigmas):
        raise ValueError("--sigma values must be positive")
    report = run(args.corpus, args.json, model_path=args.face_model, limit=args.limit, sigmas=sigmas)
    print(format_table(report))
    return 0


@_reporting
def cmd_identity_consistency(args: argparse.Namespace) -> int:
    from evaluation.identity_consistency import run

    report = run(args.images, args.json, onnx_path=args.model, model_path=args.face_model, box_mode=args.box,
                 limit=args.limit, plot=not args.no_plot, refine=args.refine)
    _print_summary(report, ("n", "within_mirror_mm", "between_mm", "between_over_within", "mirror_retrieval_top1",
                            "mirror_retrieval_top5", "median_rank", "spread_from_mean_face_mm"))
    if report["skipped"]:
        print(f"skipped {len(report['skipped'])} images (reasons in the JSON)")
    return 0


@_reporting
def cmd_same_person(args: argparse.Namespace) -> int:
    from evaluation.same_person import DEFAULT_SCALES, format_table, run

    report = run(args.corpus, args.json, onnx_path=args.model, cnet_path=args.cnet, model_path=args.face_model,
                 scales=tuple(args.scale or DEFAULT_SCALES), max_sets=args.limit)
    print(f"{report['sets']} sets × {report['views_per_set']} views, FaceMesh found {report['facemesh_found']} "
          f"of {report['views']}; C-Net {report['cnet']}; identity shape error, mm:")
    print(format_table(report))
    return 0


@_reporting
def cmd_detection(args: argparse.Namespace) -> int:
    from evaluation.detection import format_table, run

    report = run(args.corpus, args.json, onnx_path=args.model, model_path=args.face_model, limit=args.limit)
    print(format_table(report))
    return 0


@_reporting
def cmd_refine_gate(args: argparse.Namespace) -> int:
    from evaluation.refine_gate import run

    report = run(args.images, args.json, onnx_path=args.model, face_model=args.face_model, every=args.every,
                 write=args.write)
    _print_summary({**report, **{f"disagreement_{k}": v for k, v in report["disagreement"].items()}},
                   ("measured", "disagreement_p50", "disagreement_p99", "disagreement_max", "share_above_default",
                    "recommended_limit", "share_above_recommended", "written"))
    return 0


@_reporting
def cmd_bench(args: argparse.Namespace) -> int:
    from evaluation.bench import KEYS, run

    report = run(args.json, onnx_path=args.model, photo=args.photo, runs=args.runs, only=args.only,
                 corpus=args.corpus, photo_runs=args.photo_runs)
    for k in KEYS:
        v = report[k]
        print(f"{k:24s} {v:.4g}" if v is not None else f"{k:24s} null ({report.get(k + '_reason', '')})")
        detail = report.get(f"{k}_detail", {}) if k == "photo_to_params_ms" else {}
        for stage in (s for s in detail if s.endswith("_ms")):
            print(f"  {stage:22s} {detail[stage]:.3g}")
    return 0


def _print_summary(report: dict, keys: tuple[str, ...]) -> None:
    for k in keys:
        v = report.get(k)
        print(f"{k:22s} {v:.3f}" if isinstance(v, float) else f"{k:22s} {v}")
