"""What every recipe shares: the flags that mean one thing in all of them, the output folder, failing in flags.

A flag two recipes both take is defined here once (`FLAGS`), so it has one
meaning and one help text everywhere; the README's table of recipe flags is
generated from the recipes' parsers (`flags_table`) and a test keeps it
current. Exit statuses are the `kzoo` command's (`kzoo.cli.EXIT_STATUSES`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from kzoo._quiet import native_stderr_hidden
from kzoo.cli import EXIT_EXISTS, EXIT_NOT_FOUND, EXIT_STATUSES, EXIT_UNAVAILABLE

# Imported first by every recipe, so TensorFlow loads here, without its start-up lines (unless --verbose).
VERBOSE = "--verbose" in sys.argv[1:]
with native_stderr_hidden(VERBOSE):
    import tensorflow  # noqa: F401

RECIPES = ("mnist_lenet", "cifar10_resnet", "compress_and_export", "transfer_learning", "anomaly_detection",
           "adversarial_mnist", "segment_pets")

# flag -> (argparse keyword arguments without the default, help text). Defaults are each recipe's own.
FLAGS = {
    "--epochs": dict(type=int, help="training epochs"),
    "--batch-size": dict(type=int, help="training batch size"),
    "--dataset": dict(help="the dataset to train on"),
    "--data-dir": dict(help="where the data is: the TFDS data folder (default ~/tensorflow_datasets); "
                            "for anomaly_detection, the MVTec AD category folder"),
    "--offline": dict(action="store_true", help="never download; use what --data-dir holds"),
    "--mnist-idx": dict(metavar="DIR", help="folder with MNIST's original t10k idx files: the first 8,000 images "
                                            "train, the last 2,000 test (mnist_lenet validates on the last 800 of "
                                            "the 8,000)"),
    "--output": dict(help="output folder (default saved_models/<recipe's name>, with _quick for --quick)"),
    "--overwrite": dict(action="store_true", help="replace a trained model already in --output"),
    "--seed": dict(type=int, help="seeds everything (weights, pipeline, augmentation, dropout): a run repeats exactly"),
    "--quick": dict(action="store_true", help="a smoke test of a few epochs, to its own folder; not a result"),
    "--model": dict(help="the model: a kzoo registry name (kzoo list)"),
    "--strategy": dict(help="distribution strategy; multi_worker: one of the workers TF_CONFIG names "
                            "(see python -m kzoo.launch)"),
    "--learning-rate": dict(type=float, help="peak learning rate"),
    "--verbose": dict(action="store_true", help="show TensorFlow's own start-up and log lines"),
    "--backbone": dict(help="the pretrained backbone: any registry name (kzoo list)"),
    "--image-size": dict(type=int, help="images are resized to this square size"),
    "--export": dict(help="also write a .tflite in this mode, checked against the Keras model before it is kept"),
    "--weights": dict(help="the backbone's pretrained weights: 'imagenet' (Keras cache or download), a weights file, "
                           "or 'none'"),
    "--images": dict(metavar="DIR", help="train on a folder of your own images instead of --dataset, split 80/10/10 "
                                         "by --seed (transfer_learning: one sub-folder per class; segment_pets: "
                                         "with --masks)"),
}


def parser(doc: str, *, quick: str | None = None) -> argparse.ArgumentParser:
    """A recipe's parser with the flags every recipe takes (--output, --overwrite, --seed, --quick, --verbose).

    Args:
        doc: The recipe's docstring; its first line describes the recipe.
        quick: What --quick does in this recipe, if more than `FLAGS` says.
    """
    statuses = "\n".join(f"  {code}  {EXIT_STATUSES[code]}" for code in (0, 2, EXIT_NOT_FOUND, EXIT_EXISTS, EXIT_UNAVAILABLE))
    parser = argparse.ArgumentParser(description=doc.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f"exit status:\n{statuses}")
    add(parser, "--output")
    add(parser, "--overwrite")
    add(parser, "--seed", 0)
    add(parser, "--quick", **({"help": quick} if quick else {}))
    add(parser, "--verbose")
    return parser


def run(main) -> None:
    """Runs a recipe's `main()` with TensorFlow's and LiteRT's native log lines held back, unless --verbose."""
    with native_stderr_hidden(VERBOSE):
        main()


def add(parser: argparse.ArgumentParser, flag: str, default=None, **overrides) -> None:
    """Adds a shared flag with its one meaning; `overrides` may add choices or say more in the help."""
    options = {**FLAGS[flag], **overrides}
    if options.get("action") != "store_true":
        options["default"] = default
    parser.add_argument(flag, **options)


def fail(recipe: str, message: str, status: int) -> None:
    """Stops the recipe with `message` on stderr and an exit status of `kzoo.cli.EXIT_STATUSES`."""
    print(f"{recipe}: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def output_folder(args, recipe: str, default_name: str, keeps: str = "model.keras") -> str:
    """The run's output folder: `--output`, else saved_models/<default_name> (`_quick` added for --quick).

    A folder already holding a trained model (`keeps`) is refused unless
    `--overwrite`, so no run silently replaces another's model. A run
    interrupted before it wrote `keeps` resumes (training.fit's backup).
    """
    output = args.output or os.path.join("saved_models", default_name + ("_quick" if args.quick else ""))
    existing = os.path.join(output, keeps)
    if os.path.exists(existing) and not args.overwrite:
        fail(recipe, f"{existing} exists, from an earlier run; add --overwrite to replace it, or give "
                     "--output another folder.", EXIT_EXISTS)
    return output


def epochs(count: int) -> str:
    """ "1 epoch", "2 epochs"."""
    return f"{count} epoch" + ("" if count == 1 else "s")


def flags_table() -> str:
    """The README's table of recipe flags: each flag, its default in each recipe (blank: not taken), its meaning."""
    recipes_dir = os.path.dirname(os.path.abspath(__file__))
    if recipes_dir not in sys.path:
        sys.path.insert(0, recipes_dir)
    actions = {name: {a.option_strings[0]: a for a in importlib.import_module(name).build_parser()._actions
                      if a.option_strings and a.option_strings[0] != "-h"}
               for name in RECIPES}
    flags = sorted({flag for by_flag in actions.values() for flag in by_flag},
                   key=lambda flag: (flag not in FLAGS, list(FLAGS).index(flag) if flag in FLAGS else 0, flag))
    rows = ["| flag | " + " | ".join(f"`{name}`" for name in RECIPES) + " | meaning |",
            "|---|" + "---|" * len(RECIPES) + "---|"]
    for flag in flags:
        cells, meaning = [], ""
        for name in RECIPES:
            action = actions[name].get(flag)
            if action is None:
                cells.append("")
                continue
            meaning = meaning or (FLAGS.get(flag, {}).get("help") or action.help or "").replace("%%", "%")
            if isinstance(action, argparse._StoreTrueAction):
                cells.append("yes")
            else:
                cells.append("-" if action.default is None else f"`{action.default}`")
        rows.append(f"| `{flag}` | " + " | ".join(cells) + f" | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(flags_table())
