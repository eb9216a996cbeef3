"""Atomic file writes (a temporary file in the same folder, then a rename) and the optional plotting import."""

from __future__ import annotations

import json
import os
import tempfile


def atomic_write(path: str, write, suffix: str = "") -> str:
    """Calls `write(temporary_path)` and renames the result to `path`.

    Nothing half-written is left behind: on failure the temporary file is
    removed. The file gets the usual mode (0o666 less the umask), not the
    owner-only mode of a temporary file.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=suffix, dir=folder)
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, usual_mode())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path


def usual_mode(folder: bool = False) -> int:
    """The mode a plain `open(path, "w")` (or `os.mkdir`) gives: 0o666 (0o777) less the umask.

    For files and folders made with `tempfile`, which are owner-only.
    """
    mask = os.umask(0)  # The only way to read it is to set it: put it back at once.
    os.umask(mask)
    return (0o777 if folder else 0o666) & ~mask


class PlottingUnavailableError(ImportError):
    """matplotlib, an optional extra, is not installed."""


def pyplot(what: str):
    """`matplotlib.pyplot` on the Agg backend.

    Raises:
        PlottingUnavailableError: When matplotlib is not installed; the
            message names `what` needed it and how to install it.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise PlottingUnavailableError(
            f"{what} needs matplotlib, which is not installed: pip install 'kzoo[plot]' (or matplotlib)."
        ) from error
    return plt


def save_figure(figure, path: str) -> str:
    """Saves a matplotlib figure as a PNG, atomically."""
    return atomic_write(path, lambda temporary: figure.savefig(temporary, dpi=100, format="png"), ".png")


def save_json(payload, path: str) -> str:
    """Writes JSON, atomically."""

    def write(temporary):
        with open(temporary, "w") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")

    return atomic_write(path, write, ".json")
