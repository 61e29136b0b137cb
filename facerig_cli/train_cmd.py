"""``facerig train`` and ``facerig export``: the learner's command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from facemodel.outputs import check_output_dir, check_output_file

from .args import MAX_BATCH, MAX_LOADER_WORKERS, MAX_STEPS, MAX_WORKERS, add_int, add_overwrite
from .synth_cmd import add_ray_arg


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train the face regressor on rendered corpora (resumable)")
    t.add_argument("--corpus", type=Path, action="append", required=True, metavar="DIR",
                   help="corpus directory (repeat to combine corpora)")
    t.add_argument("--out", type=Path, required=True, metavar="RUN", help="run directory (checkpoints, logs)")
    t.add_argument("--config", type=Path, help="TOML or JSON config (see learner/config.py for the keys)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    add_int(t, "--steps", lo=1, hi=MAX_STEPS, help="override train.steps")
    add_int(t, "--batch-size", lo=1, hi=MAX_BATCH, help="override train.batch_size (new runs only)")
    t.add_argument("--init", type=Path, metavar="MODEL",
                   help="start from these weights (.pt checkpoint or .onnx export, e.g. the shipped model; "
                        "an .onnx also sets train.freeze_batchnorm); new runs only")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    add_execution_args(t)
    t.set_defaults(func=cmd_train)

    b = sub.add_parser("bootstrap", help="bootstrap on real photos: reconstruct, render rotated/relit views, "
                                         "retrain, evaluate — N rounds (resumable)")
    b.add_argument("--real", type=Path, action="append", required=True, metavar="DIR",
                   help="photo corpus from `facerig photos prepare` (repeat for several)")
    b.add_argument("--synthetic", type=Path, action="append", required=True, metavar="DIR",
                   help="original rendered corpus mixed into every round (repeat for several)")
    b.add_argument("--init", type=Path, required=True, metavar="MODEL",
                   help="starting network: .onnx (e.g. the shipped model) or a run's .pt checkpoint")
    add_int(b, "--rounds", lo=1, hi=1000, default=2,
            help="rounds in total; rerun with a larger number to add rounds to a finished run")
    b.add_argument("--out", type=Path, required=True, metavar="RUN2", help="bootstrap directory (resumable)")
    b.add_argument("--config", type=Path, help="training config for the rounds (TOML/JSON)")
    add_int(b, "--steps-per-round", lo=1, hi=MAX_STEPS, default=3000, help="training steps per round (default 3000)")
    b.add_argument("--no-rotate", action="store_true", help="without VRN rotated views")
    b.add_argument("--no-resample", action="store_true", help="without InverseFaceNet resampled/relit views")
    b.add_argument("--no-landmarks", action="store_true", help="without the photos' detector landmarks")
    add_int(b, "--rotations", lo=0, hi=100, default=2, help="rotated views per seed photo (default 2)")
    add_int(b, "--relight", lo=0, hi=100, default=1, help="resampled views per seed photo (default 1)")
    b.add_argument("--max-seed-yaw", type=float, default=30.0, help="seed filter: |yaw| in degrees (default 30)")
    b.add_argument("--max-seed-nme", type=float, default=5.0,
                   help="seed filter: 51-point NME (bbox, %%) against the detector (default 5)")
    add_int(b, "--max-seeds", lo=1, default=8000, help="most confident seeds per round (default 8000)")
    b.add_argument("--refine-seeds", action="store_true",
                   help="refine the kept seeds on their detector landmarks before rendering views (as the "
                        "add-on refines its predictions)")
    b.add_argument("--delight-light", choices=("network", "fitted"), default="network",
                   help="light divided out of the photos before their views are relit: the reconstruction's own "
                        "(default) or fitted to the face (one A/B round: Helen 5.54 → 5.59 %%, not adopted)")
    add_int(b, "--workers", lo=1, hi=MAX_WORKERS, default=2, help="render workers (default 2)")
    b.add_argument("--helen", type=Path, help="68-point evaluation folder, evaluated after every round")
    b.add_argument("--synthetic-test", type=Path, help="held-out rendered corpus, evaluated after every round")
    b.add_argument("--no-progress", action="store_true")
    add_execution_args(b)
    add_ray_arg(b, "the views of every round")
    b.set_defaults(func=cmd_bootstrap)

    c = sub.add_parser("cnet", help="confidence network for several photos of one person (Deep3DFaceRecon C-Net)")
    csub = c.add_subparsers(dest="cnet_command", metavar="ACTION", required=True)
    ct = csub.add_parser("train", help="train on synthetic multi-view sets with the regressor frozen; writes "
                                       "cnet.onnx, report.json and the Table-5 comparison")
    ct.add_argument("--train", type=Path, required=True, metavar="DIR",
                    help="corpus rendered with --views-per-identity K")
    ct.add_argument("--test", type=Path, required=True, metavar="DIR", help="held-out multi-view corpus")
    ct.add_argument("--regressor", type=Path, default=Path("blender_addon/models/facerig_regressor.onnx"))
    ct.add_argument("--out", type=Path, required=True, metavar="DIR")
    add_int(ct, "--steps", lo=1, hi=MAX_STEPS, default=3000, help="training steps (default 3000)")
    add_execution_args(ct, full=False)
    ct.set_defaults(func=cmd_cnet_train)

    e = sub.add_parser("export", help="export a trained run to ONNX for the add-on")
    e.add_argument("run", type=Path, help="run directory or checkpoint file")
    e.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    add_overwrite(e, "an ONNX file")
    e.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="which checkpoint of a run directory (default: best, else last)")
    e.set_defaults(func=cmd_export)


def add_execution_args(p: argparse.ArgumentParser, full: bool = True) -> None:
    """``--device`` (and for the regressor's training ``--amp``, ``--compile``, ``--loader-workers``)."""
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N",
                   help="where to train: auto (default) = CUDA when available, else CPU; under torchrun "
                        "each rank takes cuda:LOCAL_RANK")
    if not full:
        return
    p.add_argument("--amp", nargs="?", const="bf16", default="off", choices=("off", "bf16", "fp16"),
                   help="mixed precision on CUDA (bare --amp = bf16; fp16 with a gradient scaler); refused with "
                        "--device cpu, off with a warning when auto finds no GPU")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (first steps compile)")
    add_int(p, "--loader-workers", lo=0, hi=MAX_LOADER_WORKERS, metavar="N",
            help="batch-making processes per rank (pinned memory on CUDA); default 0 on CPU, up to 8 on CUDA")


def execution_from_args(args: argparse.Namespace):  # noqa: ANN201 — lazy import keeps --help fast
    from learner.devices import Execution, parse_device

    ex = Execution(device=parse_device(args.device), amp=getattr(args, "amp", "off"),
                   compile=getattr(args, "compile", False), loader_workers=getattr(args, "loader_workers", None))
    ex.validate()
    return ex


def cmd_train(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "run folder")   # before torch loads: a bad --out is refused at once
    from learner.cpu_tuning import tune_malloc

    tune_malloc()  # before the corpora are loaded (see learner/cpu_tuning.py)
    from learner.config import Config
    from learner.train import train

    config = Config.load(args.config) if args.config else None
    if args.steps is not None or args.batch_size is not None or args.init is not None:
        if args.resume and (args.batch_size is not None or args.init is not None):
            raise ValueError("--batch-size and --init cannot change on --resume")
        if config is None and args.resume:
            from learner.checkpoint import load_checkpoint

            config = Config.from_dict(load_checkpoint(args.out / "last.pt")["config"])
        config = config or Config()
        if args.steps is not None:
            config.train.steps = args.steps
        if args.batch_size is not None:
            config.train.batch_size = args.batch_size
        if args.init is not None:
            if not args.init.is_file():
                raise FileNotFoundError(f"--init model not found: {args.init}")
            config.train.init = str(args.init.resolve())
            config.train.freeze_batchnorm = config.train.freeze_batchnorm or args.init.suffix == ".onnx"
    try:
        summary = train(args.corpus, args.out, config, resume=args.resume, progress=not args.no_progress,
                        execution=execution_from_args(args))
    except KeyboardInterrupt as exc:
        print(f"facerig: {exc or 'interrupted'}")
        return 130
    if summary.get("rank", 0):
        return 0   # under torchrun rank 0 reports
    m = summary["metrics"]
    print(f"trained to step {summary['step']} ({summary['images_per_s']:.0f} images/s); "
          f"val vertex {m.get('val/vertex_mm_camera', float('nan')):.2f} mm, aligned "
          f"{m.get('val/vertex_mm_aligned', float('nan')):.2f} mm, NME {m.get('val/nme_bbox_68', float('nan')):.2f} %, "
          f"photo NME {m.get('val/photo_nme_bbox_68', float('nan')):.2f} %; run in {args.out}")
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    if not args.init.is_file():
        raise FileNotFoundError(f"--init model not found: {args.init}")
    check_output_dir(args.out, "bootstrap folder")
    from learner.cpu_tuning import tune_malloc

    tune_malloc()
    from bootstrap.loop import Bootstrap, BootstrapSettings
    from learner.config import Config

    settings = BootstrapSettings(
        real=[p.resolve() for p in args.real], synthetic=[p.resolve() for p in args.synthetic],
        init=args.init.resolve(), rounds=args.rounds, steps_per_round=args.steps_per_round,
        rotate=not args.no_rotate, resample=not args.no_resample, landmarks=not args.no_landmarks,
        rotations=args.rotations, relight=args.relight, max_seed_yaw=args.max_seed_yaw,
        max_seed_nme=args.max_seed_nme, max_seeds=args.max_seeds, workers=args.workers,
        helen=args.helen.resolve() if args.helen else None,
        synthetic_test=args.synthetic_test.resolve() if args.synthetic_test else None,
        refine_seeds=args.refine_seeds, delight_light=args.delight_light)
    config = Config.load(args.config) if args.config else None
    try:
        summary = Bootstrap(settings, args.out, config, progress=not args.no_progress,
                            execution=execution_from_args(args), ray=args.ray).run()
    except KeyboardInterrupt as exc:
        print(f"facerig: {exc or 'interrupted'}; rerun the same command to resume")
        return 130
    print((args.out / "report.md").read_text())
    print(f"final model: {summary['model']}")
    return 0


def cmd_cnet_train(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "C-Net folder")
    from learner.cpu_tuning import configure_runtime, tune_malloc

    tune_malloc()
    configure_runtime(2)
    from learner.cnet import CNetConfig, train_cnet

    report = train_cnet(args.train, args.test, args.regressor, args.out, CNetConfig(steps=args.steps),
                        device=execution_from_args(args).device)
    print((args.out / "table5.md").read_text())
    print(json.dumps(report["same_person"]))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    check_output_file(args.out, args.overwrite, "ONNX model")
    from learner.checkpoint import resolve_checkpoint
    from learner.export import export_onnx

    info = export_onnx(resolve_checkpoint(args.run, args.checkpoint), args.out)
    print(json.dumps(info))
    return 0
