"""Start N local workers of a multi-worker job, each with its TF_CONFIG on a loopback port.

    python -m kzoo.launch --workers 2 -- recipes/mnist_lenet.py --strategy multi_worker --quick
    python -m kzoo.launch --workers 2 --restarts 1 -- train.py     # start all again if one dies

Everything after `--` goes to Python: a script and its arguments, or `-m
module ...`. Each worker's output lines start with `[worker i]`. When a
worker fails, the launcher stops the others, because a MultiWorkerMirroredStrategy
job cannot go on without one of its workers. With `--restarts`, it then starts
all of them again, and a script that trains with
`training.fit(..., checkpoint_dir=...)` resumes from its last backup there.
For trying and testing on one machine; on a cluster, the scheduler starts the
workers and sets TF_CONFIG (see README, "Scaling out").
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

# TensorFlow's coordination service catches SIGTERM (measured: a worker slept on through it), so
# SIGKILL follows soon.
_STOP_GRACE_SECONDS = 3


def launch(command, workers: int, *, restarts: int = 0, host: str = "localhost") -> int:
    """Runs `python COMMAND` as `workers` local workers until all succeed, or a failure uses up the restarts.

    Args:
        command: The arguments after `python`: `["train.py", "--epochs", "2"]`.
        workers: How many workers (processes) to start.
        restarts: How many times to start all workers again after one fails.
        host: The address the workers listen on.

    Returns:
        0 when every worker exited with 0, else the exit code of the worker
        that failed first (128 + the signal number for a killed worker).

    Raises:
        ValueError: For fewer than one worker, negative restarts or no command.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} must be a positive integer.")
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 0:
        raise ValueError(f"restarts={restarts!r} must be a non-negative integer.")
    if not command:
        raise ValueError("No command: give the script to run after `--`, e.g. `-- train.py --epochs 2`.")
    for attempt in range(restarts + 1):
        failed, code = _run_workers(command, workers, host)
        if failed is None:
            return 0
        left = restarts - attempt
        _say(f"worker {failed} {_describe(code)}; stopped the other workers, since a multi-worker job cannot "
             "go on without one of them. "
             + (f"Starting all {workers} workers again ({left} restart(s) left); a script that trains with "
                "training.fit(checkpoint_dir=...) resumes from its last backup there."
                if left else
                "To resume, run the same command again: a script that trains with "
                "training.fit(checkpoint_dir=...) resumes from its last backup there. "
                "--restarts N does this automatically."))
    return 128 - code if code < 0 else code


def _run_workers(command, workers, host):
    """Starts the workers and waits; returns (None, 0) when all succeed, else (index, exit code) of the first failure."""
    cluster = {"worker": [f"{host}:{port}" for port in _free_ports(host, workers)]}
    processes, printers = [], []
    try:
        for index in range(workers):
            env = {**os.environ, "PYTHONUNBUFFERED": "1",
                   "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
            process = subprocess.Popen([sys.executable, *command], env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True, errors="replace")
            processes.append(process)
            printer = threading.Thread(target=_prefix_lines, args=(process.stdout, f"[worker {index}] "), daemon=True)
            printer.start()
            printers.append(printer)
        while True:
            codes = [process.poll() for process in processes]
            failures = [(index, code) for index, code in enumerate(codes) if code not in (None, 0)]
            if failures:
                return failures[0]
            if all(code == 0 for code in codes):
                return None, 0
            time.sleep(0.2)
    finally:
        _stop(processes)
        for printer in printers:
            printer.join(timeout=5)


def _free_ports(host, count):
    """Ports the OS has free now (held open together, so they differ)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _prefix_lines(stream, prefix):
    for line in stream:
        sys.stdout.write(prefix + line)
        sys.stdout.flush()


def _stop(processes):
    """SIGTERM to the workers still running, SIGKILL to those still there after a grace period."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        process.terminate()
    deadline = time.monotonic() + _STOP_GRACE_SECONDS
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _describe(code) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _say(message):
    sys.stdout.flush()
    print(f"kzoo.launch: {message}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    options, command = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(
        prog="python -m kzoo.launch", usage="python -m kzoo.launch --workers N [--restarts K] -- SCRIPT [ARGS...]",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--workers", type=int, required=True, help="how many local workers to start")
    parser.add_argument("--restarts", type=int, default=0,
                        help="start all workers again this many times after one fails (default 0)")
    parser.add_argument("--host", default="localhost", help="the address workers listen on (default localhost)")
    args = parser.parse_args(options)
    if not command:
        parser.error("no script: put it after `--`, e.g. `python -m kzoo.launch --workers 2 -- train.py`.")
    try:
        return launch(command, args.workers, restarts=args.restarts, host=args.host)
    except ValueError as error:
        parser.error(str(error))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
