"""The `kzoo` command (also `python -m kzoo`): list and describe models, export and verify `.tflite` files.

    kzoo list [PATTERN] [--details | --markdown]
    kzoo info NAME [--summary]
    kzoo export MODEL.keras --mode int8 --calibration DATASET --out PATH [--verify DATASET]
    kzoo verify MODEL.tflite --data DATASET [--reference MODEL.keras]

DATASET is a kzoo.data name ("digits", "mnist", any TFDS name) or a folder
with one sub-folder of images per class.
"""

from __future__ import annotations

import argparse
import os
import sys

from kzoo.models import _registry
from kzoo.models._registry import get_model, list_models, model_info
from kzoo.weights import available_weights


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="kzoo", description="The kzoo model zoo.")
    commands = parser.add_subparsers(dest="command", required=True)
    list_parser = commands.add_parser("list", help="list the models")
    list_parser.add_argument("pattern", nargs="?", default="*", help='shell wildcard, e.g. "resnet*"')
    detail = list_parser.add_mutually_exclusive_group()
    detail.add_argument("--details", action="store_true", help="add parameters and FLOPs (builds each model)")
    detail.add_argument("--markdown", action="store_true", help="the README's Markdown table (builds each model)")
    info_parser = commands.add_parser("info", help="describe one model")
    info_parser.add_argument("name")
    info_parser.add_argument("--summary", action="store_true", help="also print the Keras layer summary")
    export_parser = commands.add_parser("export", help="convert a .keras model to a verified .tflite")
    export_parser.add_argument("model", help="a .keras file")
    export_parser.add_argument("--mode", default="float32", help="float32, dynamic, float16, int8 or edgetpu")
    export_parser.add_argument("--calibration", help="DATASET for int8/edgetpu calibration (its train split)")
    export_parser.add_argument("--verify", help="DATASET to check the .tflite against the model on (test split)")
    export_parser.add_argument("--out", required=True, help="output .tflite path; the model card goes beside it")
    export_parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    verify_parser = commands.add_parser("verify", help="run a .tflite on a dataset: accuracy, latency, agreement")
    verify_parser.add_argument("model", help="a .tflite file")
    verify_parser.add_argument("--data", required=True, help="DATASET (its test split)")
    verify_parser.add_argument("--reference", help="the .keras model to compare with")
    verify_parser.add_argument("--max-samples", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            return _list(args.pattern, details=args.details, markdown=args.markdown)
        if args.command == "export":
            return _export(args)
        if args.command == "verify":
            return _verify(args)
        return _info(args.name, summary=args.summary)
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError) as error:
        print(f"kzoo: {error}", file=sys.stderr)
        return 2


def _list(pattern: str, *, details: bool, markdown: bool) -> int:
    names = list_models(pattern)
    if not names:
        print(f"kzoo: no model matches {pattern!r}; `kzoo list` shows them all.", file=sys.stderr)
        return 1
    if markdown:
        print(markdown_table(names))
        return 0
    for name in names:
        entry = _registry.model_entry(name)
        shape = "x".join(map(str, entry.default_input))
        weights = ", ".join(available_weights(name)) or "-"
        line = f"{name:14} {entry.family.name:13} {shape:11} weights: {weights}"
        if details:
            info = model_info(name)
            line += f"  params: {info['params']:>11,}  GFLOPs: {info['flops'] / 1e9:7.3f}"
        print(line)
    return 0


def markdown_table(names: list[str]) -> str:
    """The model table of the README, computed from built models."""
    rows = [
        "| model | family | parameters | GMACs | GFLOPs | default input | ImageNet weights |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    by_family = sorted(names, key=lambda name: _registry.model_entry(name).family.name)  # stable
    for name in by_family:
        info = model_info(name)
        rows.append(
            f"| `{name}` | {info['family']} | {info['params']:,} | {info['macs'] / 1e9:.4g} | "
            f"{info['flops'] / 1e9:.4g} | {'x'.join(map(str, info['default_input']))} | "
            f"{'yes' if 'imagenet' in info['weights'] else 'no'} |"
        )
    return "\n".join(rows)


def _info(name: str, *, summary: bool) -> int:
    info = model_info(name)
    for key, value in info.items():
        print(f"{key:17} {value}")
    if summary:
        get_model(name).summary()
    return 0


def _dataset(spec: str, input_shape, split: str):
    """A batched, unshuffled dataset at the model's image size: a kzoo.data name or a class-folder path."""
    from kzoo import data

    size = tuple(int(d) for d in input_shape[:2])
    if os.path.isdir(spec):
        return data.from_directory(spec, image_size=size, batch_size=64, shuffle=False)
    return data.load(spec, split, batch_size=64, image_size=size, shuffle=False)


def _load_keras(path: str):
    import keras

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is not a file; give a model saved with model.save('....keras').")
    return keras.models.load_model(path, compile=False)


def _export(args) -> int:
    from kzoo import export

    model = _load_keras(args.model)
    shape = tuple(model.inputs[0].shape[1:])
    calibration = _dataset(args.calibration, shape, "train") if args.calibration else None
    verify_data = _dataset(args.verify, shape, "test") if args.verify else None
    report = export.to_tflite(model, args.out, mode=args.mode, representative_data=calibration,
                              verify_data=verify_data, overwrite=args.overwrite)
    _print_report(report)
    return 0


def _verify(args) -> int:
    from kzoo import export

    if not os.path.isfile(args.model):
        raise FileNotFoundError(f"{args.model} is not a file; give a .tflite written by `kzoo export`.")
    input_shape = export.TFLiteModel(args.model).input_shape
    reference = _load_keras(args.reference) if args.reference else None
    report = export.verify(args.model, _dataset(args.data, input_shape, "test"), reference=reference,
                           max_samples=args.max_samples)
    _print_report(report)
    return 0


def _print_report(report: dict) -> None:
    for key, value in report.items():
        if key != "float_operators":
            print(f"{key:20} {value}")


if __name__ == "__main__":
    sys.exit(main())
