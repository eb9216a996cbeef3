"""Running TensorFlow without its native log lines on the terminal.

TensorFlow and LiteRT log from native code to file descriptor 2, some of it
before any log level is read (the absl banner, oneDNN, CUDA, CPU-feature and
XNNPACK lines), so neither `TF_CPP_MIN_LOG_LEVEL` nor Python's `sys.stderr`
can hold them back; only pointing the descriptor elsewhere does. Python's own
`sys.stderr` (kzoo's messages, warnings, tracebacks) keeps the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings


@contextlib.contextmanager
def native_stderr_hidden(verbose: bool = False):
    """Inside the block, native writes to file descriptor 2 go to a temporary file; Python's stderr does not.

    Args:
        verbose: Hide nothing.
    """
    if verbose:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # Read once absl is up; covers TensorFlow's later lines.
    sys.stderr.flush()
    terminal = os.dup(2)
    python_stderr = sys.stderr
    tf_logger = logging.getLogger("tensorflow")
    tf_level = tf_logger.level
    with tempfile.TemporaryFile() as native, open(terminal, "w", buffering=1, closefd=False) as terminal_stream, \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"(tensorflow|tf_keras|absl)(\.|$)")  # TensorFlow's Python-side notes
        tf_logger.setLevel(logging.ERROR)
        sys.stderr = terminal_stream
        os.dup2(native.fileno(), 2)
        try:
            yield
        finally:
            terminal_stream.flush()
            os.dup2(terminal, 2)
            os.close(terminal)
            sys.stderr = python_stderr
            tf_logger.setLevel(tf_level)
