"""ferlab export RUN_DIR --out DIR|FILE.onnx [--name NAME] [--tta flip] [--quantize int8] [--data FILE]"""

from __future__ import annotations

from ._options import MARGIN, add_progress, check_output


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a trained run to ONNX with its model card (temperature fitted "
                                      "on the run's selection split)")
    p.add_argument("run", help="run directory (ferlab train --out)")
    p.add_argument("--out", default="exported", help="output folder or .onnx path (default exported/)")
    p.add_argument("--name", help="model name (default: the run folder's name)")
    p.add_argument("--tta", choices=["none", "flip"], default="none", help="bake flip averaging into the graph")
    p.add_argument("--quantize", choices=["none", "int8"], default="none", help="static int8 quantisation")
    p.add_argument("--margin", type=MARGIN, default=None, help="face-crop margin recorded on the card")
    p.add_argument("--no-calibrate", action="store_true", help="skip fitting the temperature")
    p.add_argument("--data", help="the run's dataset, when its recipe's path does not lead there from here "
                                  "(used to fit the temperature and calibrate int8)")
    # the switch every long command shares (README): export draws no bars today, so scripts may pass it anyway
    add_progress(p, default=False, note="; export draws none: taken so that every long command accepts it")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..card import FACE_MARGIN
    from ..training.export import export_run

    check_output(args.out, "--out", folder=Path(args.out).suffix != ".onnx")

    card = export_run(args.run, args.out, name=args.name, tta=args.tta, quantize=args.quantize,
                      calibrate=not args.no_calibrate, margin=FACE_MARGIN if args.margin is None else args.margin,
                      data=args.data)
    cal = card.get("calibration", {})
    print(f"exported {card['name']}: {card['onnx_file']} ({card['onnx_bytes'] / 1e6:.2f} MB, "
          f"{card['params'] / 1e6:.2f} M params, {card['macs'] / 1e6:.0f} M MACs), temperature {card['temperature']}"
          + (f", ECE {cal['ece_before']:.3f} -> {cal['ece_after']:.3f} on {cal['split']}" if cal else ""))
    return 0
