"""The `kzoo` command (also `python -m kzoo`): list and describe the models of the zoo.

    kzoo list [PATTERN] [--details | --markdown]
    kzoo info NAME [--summary]
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            return _list(args.pattern, details=args.details, markdown=args.markdown)
        return _info(args.name, summary=args.summary)
    except ValueError as error:
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


if __name__ == "__main__":
    sys.exit(main())
