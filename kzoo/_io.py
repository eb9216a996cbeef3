"""Atomic file writes: a temporary file in the same folder, then a rename."""

from __future__ import annotations

import json
import os
import tempfile


def atomic_write(path: str, write, suffix: str = "") -> str:
    """Calls `write(temporary_path)` and renames the result to `path`.

    Nothing half-written is left behind: on failure the temporary file is removed.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=suffix, dir=folder)
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path


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
