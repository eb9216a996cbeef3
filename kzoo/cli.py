"""The `kzoo` command (also `python -m kzoo`): list and describe models, export and verify `.tflite` files.

    kzoo list [PATTERN] [--details | --markdown]
    kzoo info NAME [--summary]
    kzoo export MODEL.keras --mode int8 --calibration DATASET --out PATH [--verify DATASET]
    kzoo verify MODEL.tflite --data DATASET [--reference MODEL.keras]
    kzoo convert CHECKPOINT --model NAME [--out PATH.weights.h5]

`list` and `info` read `kzoo/catalog.json` and start at once; the others
import TensorFlow, whose start-up lines are hidden unless `--verbose`.
Errors are said in the command's own flags, one exit status per kind
(`EXIT_STATUSES`, printed by `kzoo --help`).
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import os
import sys

from kzoo import catalog

# Kept equal to kzoo.export.MODES by a test; not imported from there, which would load TensorFlow.
EXPORT_MODES = ("float32", "dynamic", "float16", "int8", "edgetpu")

EXIT_USAGE = 2  # argparse's own status for a bad flag
EXIT_NOT_FOUND = 3
EXIT_EXISTS = 4
EXIT_UNAVAILABLE = 5
EXIT_CHECK_FAILED = 6
EXIT_STATUSES = {
    0: "done",
    EXIT_USAGE: "a flag or its value is wrong (the message says which, and what to give)",
    EXIT_NOT_FOUND: "no such model, no model matches the pattern, or no such file",
    EXIT_EXISTS: "the output file exists; --overwrite replaces it",
    EXIT_UNAVAILABLE: ("a dataset or weights file is neither on disk nor downloadable, or the command needs "
                       "TensorFlow (export, verify), which this Python lacks or does not run as Keras' backend"),
    EXIT_CHECK_FAILED: ("the .tflite failed its check against the Keras model, the checkpoint does not fit the model "
                        "or cannot be read safely, or a converter failed; nothing was written"),
}

DATASET_HELP = ('a kzoo.data name ("digits", "mnist", any TFDS name) or a folder with one sub-folder '
                "of images per class; images are resized to the model's input")


class CommandError(Exception):
    """An error to print as `kzoo: message` and exit with `status`."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def build_parser() -> argparse.ArgumentParser:
    """The `kzoo` argument parser (also used to generate and test the README's usage)."""
    statuses = "\n".join(f"  {code}  {meaning}" for code, meaning in EXIT_STATUSES.items())
    parser = argparse.ArgumentParser(
        prog="kzoo", description="The kzoo model zoo.", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"DATASET: {DATASET_HELP}.\n\nexit status:\n{statuses}",
    )
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's own start-up and log lines")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    list_parser = commands.add_parser("list", help="list the models")
    list_parser.add_argument("pattern", nargs="?", default="*", help='shell wildcard, e.g. "resnet*"')
    detail = list_parser.add_mutually_exclusive_group()
    detail.add_argument("--details", action="store_true", help="add parameters and GMACs")
    detail.add_argument("--markdown", action="store_true", help="the README's Markdown table")
    info_parser = commands.add_parser("info", help="describe one model: size, cost, inputs, weights and their accuracy")
    info_parser.add_argument("name")
    info_parser.add_argument("--summary", action="store_true", help="also print the Keras layer summary (builds the model)")
    export_parser = commands.add_parser("export", help="convert a .keras model to a verified .tflite")
    export_parser.add_argument("model", help="a .keras file")
    export_parser.add_argument("--mode", default="float32", choices=EXPORT_MODES,
                               help="float32, dynamic, float16, int8 or edgetpu (default float32)")
    export_parser.add_argument("--calibration", metavar="DATASET",
                               help="needed by int8 and edgetpu: its train split calibrates the int8 ranges")
    export_parser.add_argument("--verify", metavar="DATASET", help="check the .tflite against the model on its test split")
    export_parser.add_argument("--out", required=True, help="output .tflite path; the model card goes beside it")
    export_parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    verify_parser = commands.add_parser("verify", help="run a .tflite on a dataset: accuracy, latency, agreement")
    verify_parser.add_argument("model", help="a .tflite file")
    verify_parser.add_argument("--data", required=True, metavar="DATASET", help="its test split is used")
    verify_parser.add_argument("--reference", metavar="MODEL.keras", help="the .keras model to compare with")
    verify_parser.add_argument("--max-samples", type=int, default=None, metavar="N", help="stop after N images")
    convert_parser = commands.add_parser(
        "convert", help="convert a torchvision/timm checkpoint (.pth, .pt, .bin, .safetensors) to a .weights.h5 once")
    convert_parser.add_argument("checkpoint", help="the downloaded checkpoint, e.g. resnet18-f37072fd.pth")
    convert_parser.add_argument("--model", required=True, help="the kzoo model it is for, e.g. resnet18")
    convert_parser.add_argument("--out", help="output .weights.h5 path (default: beside the checkpoint)")
    convert_parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "export" and args.mode in ("int8", "edgetpu") and not args.calibration:
        parser.error(f"--mode {args.mode} needs --calibration DATASET: a few hundred training images set the "
                     "int8 ranges (e.g. --calibration digits, or the folder of images the model was trained on).")
    try:
        if args.command == "list":
            return _list(args.pattern, details=args.details, markdown=args.markdown)
        if args.command == "info":
            return _info(args.name, summary=args.summary, verbose=args.verbose)
        return _run_with_tensorflow(args)
    except CommandError as error:
        print(f"kzoo: {error}", file=sys.stderr)
        return error.status
    except KeyboardInterrupt:
        print("kzoo: interrupted; nothing half-written was left behind.", file=sys.stderr)
        return 130


def _run_with_tensorflow(args) -> int:
    from kzoo._quiet import native_stderr_hidden

    with native_stderr_hidden(args.verbose):
        return _run_and_classify(args)


def _run_and_classify(args) -> int:
    from kzoo._backend import TensorFlowRequiredError
    from kzoo.convert import CheckpointError
    from kzoo.weights import WeightsUnavailableError

    unavailable, export_failed = (TensorFlowRequiredError, WeightsUnavailableError), ()
    try:
        if args.command != "convert":  # export and verify need TensorFlow; convert runs on any backend.
            from kzoo.data import DatasetUnavailableError
            from kzoo.export import ExportError

            unavailable, export_failed = (*unavailable, DatasetUnavailableError), (ExportError,)
        return {"export": _export, "verify": _verify, "convert": _convert}[args.command](args)
    except unavailable as error:
        raise CommandError(str(error), EXIT_UNAVAILABLE) from None
    except export_failed as error:
        raise CommandError(_in_flags(str(error)), EXIT_CHECK_FAILED) from None
    except FileNotFoundError as error:
        raise CommandError(str(error), EXIT_NOT_FOUND) from None
    except FileExistsError as error:
        raise CommandError(_in_flags(str(error)), EXIT_EXISTS) from None
    except CheckpointError as error:
        raise CommandError(str(error), EXIT_CHECK_FAILED) from None
    except ValueError as error:  # Data that does not fit the model, and other bad values.
        raise CommandError(_in_flags(str(error)), EXIT_USAGE) from None


def _convert(args) -> int:
    from kzoo import convert
    from kzoo._io import atomic_write
    from kzoo.models import get_model

    if args.model not in catalog.load():
        close = difflib.get_close_matches(args.model, list(catalog.load()), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise CommandError(f"--model {args.model}: no such model.{hint} `kzoo list` shows them all.", EXIT_NOT_FOUND)
    if not os.path.isfile(args.checkpoint):
        raise CommandError(f"{args.checkpoint}: no such file.", EXIT_NOT_FOUND)
    if not args.checkpoint.endswith(convert.CHECKPOINT_SUFFIXES):
        raise CommandError(f"{args.checkpoint}: not a checkpoint kzoo converts; give a "
                           f"{', '.join(convert.CHECKPOINT_SUFFIXES)} file.", EXIT_USAGE)
    out = args.out or f"{os.path.splitext(args.checkpoint)[0]}.weights.h5"
    if not out.endswith(".weights.h5"):
        raise CommandError(f"--out {out}: Keras weights files end in .weights.h5.", EXIT_USAGE)
    if os.path.exists(out) and not args.overwrite:
        raise CommandError(f"{out} exists; --overwrite replaces it.", EXIT_EXISTS)
    model = get_model(args.model)
    try:
        convert.load_checkpoint(model, catalog.load()[args.model]["family"], args.checkpoint)
    except ValueError as error:
        if isinstance(error, convert.CheckpointError):
            raise
        raise CommandError(str(error), EXIT_CHECK_FAILED) from None
    atomic_write(out, model.save_weights, suffix=".weights.h5")
    print(f"wrote {out}: {args.model} weights from {args.checkpoint}; load them with "
          f"kzoo.{args.model}(weights={out!r})")
    return 0


def _in_flags(message: str) -> str:
    """A kzoo.export message, with the Python arguments it names said as the flags that set them."""
    for argument, flag in (("representative_data=", "--calibration"), ("representative_data", "--calibration"),
                           ("verify_data=", "--verify"), ("verify_data", "--verify"), ("overwrite=True", "--overwrite")):
        message = message.replace(argument, flag)
    return message


def _matching(pattern: str) -> dict[str, dict]:
    entries = catalog.load()
    names = [name for name in entries if fnmatch.fnmatchcase(name, pattern)]
    if not names:
        raise CommandError(f"no model matches {pattern!r}; `kzoo list` shows all {len(entries)}.", EXIT_NOT_FOUND)
    return {name: entries[name] for name in names}


def _list(pattern: str, *, details: bool, markdown: bool) -> int:
    entries = _matching(pattern)
    if markdown:
        print(markdown_table(entries))
        return 0
    rows = []
    for name, entry in entries.items():
        row = [name, entry["family"], _shape(entry["default_input"]), "weights: " + (", ".join(entry["weights"]) or "-")]
        if details:
            row += [f"params: {entry['params']:,}", f"GMACs: {entry['macs'] / 1e9:.4g}"]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def _shape(shape) -> str:
    return "x".join(map(str, shape))


def markdown_table(entries: dict[str, dict]) -> str:
    """The model table of the README, from catalog entries (`kzoo.catalog.load()`)."""
    rows = [
        "| model | family | parameters | GMACs | GFLOPs | default input | ImageNet weights (source, top-1) |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    by_family = sorted(entries.items(), key=lambda item: item[1]["family"])  # stable: list order within a family
    for name, entry in by_family:
        imagenet = entry["weights"].get("imagenet")
        weights = f"{imagenet['source']}, top-1 {imagenet['top1']}%" if imagenet else "-"
        rows.append(
            f"| `{name}` | {entry['family']} | {entry['params']:,} | {entry['macs'] / 1e9:.4g} | "
            f"{entry['flops'] / 1e9:.4g} | {_shape(entry['default_input'])} | "
            f"{weights} |"
        )
    return "\n".join(rows)


def _info(name: str, *, summary: bool, verbose: bool) -> int:
    entries = catalog.load()
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise CommandError(f"no model named {name!r}.{hint} `kzoo list` shows all {len(entries)}.", EXIT_NOT_FOUND)
    print(describe(entries[name]))
    if summary:
        from kzoo._quiet import native_stderr_hidden

        with native_stderr_hidden(verbose):
            from kzoo.models import get_model

            get_model(name).summary()
    return 0


def describe(entry: dict) -> str:
    """`kzoo info`'s text for one catalog entry."""
    size = entry["min_size"]
    lines = [
        ("model", entry["name"]),
        ("family", entry["family"]),
        ("paper", entry["paper"]),
        ("parameters", f"{entry['params']:,} ({entry['trainable_params']:,} trainable)"),
        ("cost", f"{entry['macs'] / 1e9:.4g} GMACs ({entry['flops'] / 1e9:.4g} GFLOPs) "
                 f"per image at {_shape(entry['default_input'])}"),
        ("default input", f"{_shape(entry['default_input'])}; height and width at least {size}x{size}"),
        ("classes", f"{entry['num_classes']} by default (num_classes=)"),
        ("feature maps", ", ".join(f"{channels} channels at stride {stride}" for stride, channels
                                   in zip(entry["feature_strides"], entry["feature_channels"]))
         + " (features_only=True)"),
    ]
    if not entry["weights"]:
        lines.append(("weights", "none published; weights= takes a file of your own"))
    for tag, record in entry["weights"].items():
        accuracy = (f"ImageNet top-1 {record['top1']}%, top-5 {record['top5']}%"
                    if record["top1"] is not None else "accuracy not published")
        lines.append(("weights", f'weights="{tag}" ({record["source"]}): {accuracy}, from {record["accuracy_source"]}'))
        lines.append(("", f"preprocessing: kzoo.preprocess_input(x, {entry['name']!r}) ({record['preprocessing']} "
                          f"mode) on {record['input_size']}x{record['input_size']} RGB 0-255 images; "
                          f"labels: {record['categories']}"))
        lines.append(("", f"file: {record['format']}, licence: {record['licence']}"
                          + ("; converted to .weights.h5 on first use" if record["format"] != "keras-h5" else "")))
    return "\n".join(f"{key:17} {value}" for key, value in lines)


def _dataset(spec: str, input_shape, split: str, flag: str):
    """A batched, unshuffled, uncached dataset at the model's image size: a kzoo.data name or a class-folder path."""
    from kzoo import data

    size = tuple(int(d) for d in input_shape[:2])
    # Not cached: each image is read once, and a partly read cache makes tf.data warn.
    if os.path.isdir(spec):
        return data.from_directory(spec, image_size=size, batch_size=64, shuffle=False, cache=False)
    if os.sep in spec or os.path.exists(spec):
        raise CommandError(f"{flag} {spec}: not a folder. Give a folder with one sub-folder of images "
                           "per class, or a dataset name such as digits.", EXIT_NOT_FOUND)
    try:
        return data.load(spec, split, batch_size=64, image_size=size, shuffle=False, cache=False)
    except data.DatasetUnavailableError as error:
        raise CommandError(
            f"{flag} {spec}: the dataset is {error.why}. Prepare it with TFDS where there is network access, "
            f"or give {flag} digits (1,797 embedded handwritten digits) or a folder with one sub-folder of "
            "images per class.", EXIT_UNAVAILABLE) from None
    except ValueError as error:
        raise CommandError(f"{flag} {spec}: {error}", EXIT_USAGE) from None


def _load_keras(path: str, flag: str):
    import keras

    if not os.path.isfile(path):
        raise CommandError(f"{flag} {path}: no such file. Give a model saved with model.save('....keras'), "
                           "e.g. saved_models/lenet5_mnist/model.keras after recipes/mnist_lenet.py.",
                           EXIT_NOT_FOUND)
    return keras.models.load_model(path, compile=False)


def _export(args) -> int:
    from kzoo import export

    if os.path.exists(args.out) and not args.overwrite:
        raise CommandError(f"--out {args.out} exists; add --overwrite to replace it, or give another --out.",
                           EXIT_EXISTS)
    model = _load_keras(args.model, "MODEL")
    shape = tuple(model.inputs[0].shape[1:])
    calibration = _dataset(args.calibration, shape, "train", "--calibration") if args.calibration else None
    verify_data = _dataset(args.verify, shape, "test", "--verify") if args.verify else None
    report = export.to_tflite(model, args.out, mode=args.mode, representative_data=calibration,
                              verify_data=verify_data, overwrite=args.overwrite)
    _print_report(report)
    return 0


def _verify(args) -> int:
    from kzoo import export

    if not os.path.isfile(args.model):
        raise CommandError(f"MODEL {args.model}: no such file. Give a .tflite written by `kzoo export`.",
                           EXIT_NOT_FOUND)
    input_shape = export.TFLiteModel(args.model).input_shape
    reference = _load_keras(args.reference, "--reference") if args.reference else None
    report = export.verify(args.model, _dataset(args.data, input_shape, "test", "--data"), reference=reference,
                           max_samples=args.max_samples)
    _print_report(report)
    return 0


def _print_report(report: dict) -> None:
    for key, value in report.items():
        if key != "float_operators":
            print(f"{key:20} {value}")


if __name__ == "__main__":
    sys.exit(main())
