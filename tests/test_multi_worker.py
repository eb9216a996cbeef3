"""Multi-worker training: real local workers (kzoo.launch), a killed worker, TF_CONFIG, the twin route in-process."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import keras
import numpy as np
import pytest

import kzoo
from kzoo import data, distribute, launch, training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOB = os.path.join(ROOT, "tests", "multi_worker_job.py")


def run_launch(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "kzoo.launch", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def worker_results(out, workers=2):
    """Each worker's npz as (starting weights, twin weights, Keras 3 weights, the whole npz)."""

    def weights(saved, prefix):
        return [saved[f"{prefix}{i}"] for i in range(sum(key.startswith(prefix) for key in saved))]

    saved = [dict(np.load(os.path.join(out, f"worker{index}.npz"))) for index in range(workers)]
    return [(weights(s, "start_"), weights(s, "twin_"), weights(s, "keras_"), s) for s in saved]


def max_difference(weights_a, weights_b):
    assert [w.shape for w in weights_a] == [w.shape for w in weights_b]
    return max(float(np.abs(a - b).max()) for a, b in zip(weights_a, weights_b))


def kill_paused_worker(out, running, timeout=240):
    """Waits for the job's worker 1 to pause (it writes `out/paused`), then SIGKILLs it: mid-run, after
    its backup. Returns False when it never paused, or a process in `running` ended first."""
    paused = out / "paused"
    deadline = time.monotonic() + timeout
    while not paused.exists() and time.monotonic() < deadline and all(p.poll() is None for p in running):
        time.sleep(0.2)
    if not paused.exists():
        return False
    time.sleep(0.2)  # The pid is written before the file closes; let it land.
    os.kill(int(paused.read_text()), signal.SIGKILL)
    return True


def history_rows(checkpoint_dir):
    with open(os.path.join(checkpoint_dir, "history.csv")) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_two_workers_train_lenet5_to_identical_weights_that_the_chiefs_keras_model_holds(tmp_path):
    checkpoint_dir = tmp_path / "run"
    result = run_launch("--workers", "2", "--", JOB, "--out", str(tmp_path), "--epochs", "2",
                        "--checkpoint-dir", str(checkpoint_dir))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (first0, twin0, keras0, saved0), (first1, twin1, keras1, saved1) = worker_results(tmp_path)

    assert max_difference(first0, first1) > 0.01  # Each worker built its own random LeNet-5 ...
    assert max_difference(twin0, twin1) == 0.0  # ... and all ended with the same weights,
    assert max_difference(keras0, twin0) == 0.0  # which the chief's Keras 3 model holds,
    assert max_difference(keras0, first0) > 0.01  # and they were trained.
    assert saved0["chief"] and not saved1["chief"] and saved0["history_model_is_keras3"]
    loss0, loss1 = saved0["loss"], saved1["loss"]
    assert len(loss0) == 2 and loss0[1] < 0.7 * loss0[0]
    np.testing.assert_array_equal(loss0, loss1)  # The all-reduced loss.

    # Only the chief wrote: a Keras 3 best.keras, a CSV with both epochs, no workers' leftovers.
    assert sorted(os.listdir(checkpoint_dir)) == ["best.keras", "history.csv", "logs"]
    best = keras.models.load_model(checkpoint_dir / "best.keras")
    assert max_difference(best.get_weights(), keras0) == 0.0
    rows = history_rows(checkpoint_dir)
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert float(rows[1]["loss"]) == pytest.approx(loss0[1], rel=1e-6)


@pytest.mark.slow
def test_a_killed_worker_makes_the_launcher_restart_all_and_training_resumes_from_the_backup(tmp_path):
    checkpoint_dir = tmp_path / "run"
    command = [sys.executable, "-m", "kzoo.launch", "--workers", "2", "--restarts", "1", "--", JOB,
               "--out", str(tmp_path), "--epochs", "4", "--checkpoint-dir", str(checkpoint_dir),
               "--pause-after-epoch", "1"]
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert kill_paused_worker(tmp_path, [launcher]), launcher.communicate()  # Worker 1: after epoch 2 of 4.
    stdout, stderr = launcher.communicate(timeout=300)

    assert launcher.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert "worker 1 was killed by SIGKILL" in stderr and "Starting all 2 workers again" in stderr
    (_, twin0, keras0, saved0), (_, twin1, _, saved1) = worker_results(tmp_path)
    assert saved0["first_epoch"] == saved1["first_epoch"] == 2  # Resumed after the two backed-up epochs.
    assert len(saved0["loss"]) == 2
    assert max_difference(twin0, twin1) == 0.0 and max_difference(keras0, twin0) == 0.0
    rows = history_rows(checkpoint_dir)
    assert [row["epoch"] for row in rows] == ["0", "1", "2", "3"]  # One history across the restart.
    assert float(rows[3]["loss"]) < float(rows[0]["loss"])
    assert not os.path.exists(checkpoint_dir / "backup")  # A finished run leaves no backup.


@pytest.mark.slow
def test_without_a_launcher_the_other_worker_fails_with_a_clear_message_when_one_is_killed(tmp_path):
    # What happens on a cluster: nobody stops the survivors; TensorFlow's heartbeats notice the dead worker.
    ports = launch._free_ports("localhost", 2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    workers = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen(
            [sys.executable, JOB, "--out", str(tmp_path), "--epochs", "4", "--checkpoint-dir", str(tmp_path / "run"),
             "--pause-after-epoch", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env,
        ))
    try:
        assert kill_paused_worker(tmp_path, workers), \
            workers[0].communicate(timeout=5)[0][-3000:] if workers[0].poll() is not None else ""
        output, _ = workers[0].communicate(timeout=120)
    finally:
        for worker in workers:
            worker.kill()
    assert workers[0].returncode != 0
    assert "RuntimeError: A worker was lost during multi-worker training" in output
    assert "start all workers again with the same command" in output
    assert f"resume from the last backup in {tmp_path / 'run' / 'backup'}" in output


@pytest.mark.slow
def test_the_mnist_recipe_runs_on_two_launched_workers_and_only_the_chief_writes(tmp_path):
    output = tmp_path / "lenet"
    result = run_launch("--workers", "2", "--", "recipes/mnist_lenet.py", "--quick", "--dataset", "digits",
                        "--strategy", "multi_worker", "--output", str(output))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[worker 1] Training done; the chief worker evaluates and writes the files." in result.stdout
    assert "[worker 0] lenet5 on digits: test accuracy" in result.stdout
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["test_accuracy"] > 0.3
    assert {"model.keras", "best.keras", "curves.png", "confusion.png", "history.csv"} <= set(os.listdir(output))


def test_launch_stops_the_other_workers_when_one_fails_and_says_how_to_resume(capsys):
    fail_second = ("import json, os, sys, time\n"
                   "index = json.loads(os.environ['TF_CONFIG'])['task']['index']\n"
                   "print('ports', json.loads(os.environ['TF_CONFIG'])['cluster']['worker'])\n"
                   "sys.exit(3) if index == 1 else time.sleep(120)")
    start = time.monotonic()
    code = launch.launch(["-c", fail_second], 2)
    assert code == 3 and time.monotonic() - start < 60  # Worker 0 was stopped, not waited for.
    out, err = capsys.readouterr()
    assert "[worker 0] ports" in out and "[worker 1] ports" in out
    assert "worker 1 exited with code 3; stopped the other workers" in err
    assert "run the same command again" in err and "--restarts N" in err


def test_launch_sets_each_workers_tf_config_and_restarts_a_failed_run(tmp_path, capsys):
    # Worker 1 fails on the first attempt only (it leaves a file), so one restart makes the run succeed.
    # It fails only once the others have printed: a worker stopped before it printed (a loaded machine
    # starts Python slowly) would show one attempt, not two.
    script = tmp_path / "job.py"
    script.write_text(
        "import json, os, sys, time\n"
        "config = json.loads(os.environ['TF_CONFIG'])\n"
        "index = config['task']['index']\n"
        f"folder = {str(tmp_path)!r}\n"
        "print('cluster', len(config['cluster']['worker']), 'task', config['task']['type'], index, flush=True)\n"
        "open(os.path.join(folder, f'printed_{index}'), 'a').close()\n"
        "marker = os.path.join(folder, 'failed_once')\n"
        "if index == 1 and not os.path.exists(marker):\n"
        "    deadline = time.time() + 60\n"
        "    while time.time() < deadline and not all(\n"
        "            os.path.exists(os.path.join(folder, f'printed_{other}')) for other in (0, 2)):\n"
        "        time.sleep(0.05)\n"
        "    open(marker, 'w').close()\n"
        "    sys.exit(5)\n"
    )
    assert launch.launch([str(script)], 3, restarts=1) == 0
    out, err = capsys.readouterr()
    for index in range(3):
        assert out.count(f"[worker {index}] cluster 3 task worker {index}") == 2  # Two attempts each.
    assert "worker 1 exited with code 5" in err and "1 restart(s) left" in err


@pytest.mark.parametrize("argv, message", [
    (["--workers", "2"], "no script"),
    (["--workers", "0", "--", "train.py"], "workers=0 must be a positive integer"),
    (["--workers", "2", "--restarts", "-1", "--", "train.py"], "restarts=-1"),
])
def test_launch_command_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        launch.main(argv)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("tf_config, message", [
    ("{not json", "is not JSON"),
    ('{"task": {"type": "worker", "index": 0}}', "no 'cluster'"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:1"]}, "task": {"type": "worker", "index": 0}}', "'ps'"),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}', "index within it"),
    ('{"cluster": {"worker": ["a:1"]}}', "must name one of the cluster's jobs"),
])
def test_a_malformed_tf_config_gets_a_clear_error(monkeypatch, tf_config, message):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match="TF_CONFIG") as error:
        distribute.strategy("multi_worker")
    assert message in str(error.value)


@pytest.mark.parametrize("cluster, task, chief", [
    ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 0}, True),
    ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 1}, False),
    ({"chief": ["c:1"], "worker": ["a:1", "b:1"]}, {"type": "worker", "index": 0}, False),
    ({"chief": ["c:1"], "worker": ["a:1", "b:1"]}, {"type": "chief", "index": 0}, True),
])
def test_which_worker_is_the_chief(monkeypatch, cluster, task, chief):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
    assert distribute.is_chief() is chief
    assert distribute.num_workers() == sum(len(v) for v in cluster.values())
    monkeypatch.delenv("TF_CONFIG")
    assert distribute.is_chief() and distribute.num_workers() == 1


def test_the_twin_uses_the_same_learning_rate_schedules():
    import tf_keras

    for schedule in ("cosine", "step"):
        ours = training.learning_rate_schedule(schedule, 0.1, epochs=20, steps_per_epoch=10)
        twin = training.learning_rate_schedule(schedule, 0.1, epochs=20, steps_per_epoch=10, library=tf_keras)
        assert isinstance(twin, tf_keras.optimizers.schedules.LearningRateSchedule)
        for step in (0, 5, 20, 99, 100, 150, 199):
            assert float(twin(step)) == pytest.approx(float(ours(step)), rel=1e-6, abs=1e-9), (schedule, step)


def test_one_worker_without_tf_config_trains_the_twin_in_process(tmp_path, monkeypatch):
    # The whole twin route in this process: MultiWorkerMirroredStrategy without TF_CONFIG is one local worker.
    monkeypatch.delenv("TF_CONFIG", raising=False)
    train = data.load("digits", "train", batch_size=64, seed=0)
    val = data.load("digits", "test", batch_size=200, shuffle=False)
    model = kzoo.lenet5()
    before = model.get_weights()
    history = training.fit(model, train, val, epochs=2, strategy="multi_worker", label_smoothing=0.1,
                           optimizer="sgd", learning_rate=0.05, checkpoint_dir=str(tmp_path), verbose=0)
    assert distribute.is_multi_worker(distribute.strategy("multi_worker"))
    assert history.model is model and max_difference(before, model.get_weights()) > 0.01
    assert history.history["val_accuracy"][-1] == pytest.approx(training.evaluate(model, val)["accuracy"], abs=1e-6)
    best = keras.models.load_model(tmp_path / "best.keras")
    assert best.name == "lenet5"
    training.plot_history(str(tmp_path / "history.csv"), str(tmp_path / "curves.png"))  # tf_keras' CSV reads back.
    assert os.path.getsize(tmp_path / "curves.png") > 1000

    import tf_keras

    policies = []
    note_policies = tf_keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: policies.extend(layer.dtype_policy.name for layer in note_policies.model.layers))
    mixed = training.fit(kzoo.lenet5, train, epochs=1, strategy="multi_worker", mixed_precision="mixed_bfloat16",
                         callbacks=[note_policies], verbose=0)
    assert policies[1] == "mixed_bfloat16" and policies[-1] == "float32"  # The twin trained in bfloat16 ...
    assert mixed.model.layers[1].dtype_policy.name == "float32"  # ... and hands back a float32 Keras 3 model.
    assert np.isfinite(mixed.history["loss"][0])


def test_multi_worker_fit_refuses_keras3_callbacks_and_optimizers():
    train = data.load("digits", "train", batch_size=64, seed=0)
    with pytest.raises(ValueError, match=r"not a tf_keras callback.*tf_keras.callbacks.EarlyStopping"):
        training.fit(kzoo.lenet5(), train, epochs=1, strategy="multi_worker",
                     callbacks=[keras.callbacks.EarlyStopping()])
    with pytest.raises(ValueError, match=r"tf_keras.optimizers.Optimizer.*give the name, or a tf_keras optimizer"):
        training.fit(kzoo.lenet5(), train, epochs=1, strategy="multi_worker", optimizer=keras.optimizers.Adam())


def test_transfer_fine_tuning_under_multi_worker_keeps_frozen_layers_frozen_in_the_twin():
    from kzoo import transfer

    rng = np.random.RandomState(0)
    tiny = data.from_arrays(rng.uniform(0, 1, (48, 32, 32, 3)).astype("float32"), rng.randint(0, 3, 48),
                            batch_size=16, seed=0)
    model = transfer.build("resnet20", 3, weights=None, input_shape=(32, 32, 3))
    watched = ["conv1_conv", "conv2_block1_1_bn", "conv4_block1_1_conv", "head_predictions"]
    before = {name: [w.copy() for w in model.get_layer(name).get_weights()] for name in watched}
    head, fine = transfer.fine_tune(model, tiny, head_epochs=1, fine_tune_epochs=1, unfreeze="top",
                                    learning_rate=0.01, strategy="multi_worker", verbose=0)
    assert len(head.epoch) == len(fine.epoch) == 1 and fine.model is model
    changed = {name: max_difference(before[name], model.get_layer(name).get_weights()) > 0 for name in watched}
    # Below the top stage and every BatchNormalization stay as they were; the top stage and the head train.
    assert changed == {"conv1_conv": False, "conv2_block1_1_bn": False, "conv4_block1_1_conv": True,
                       "head_predictions": True}


def test_several_workers_on_an_unseeded_kzoo_pipeline_get_a_warning():
    from kzoo import _multi_worker

    unseeded = data.load("digits", "train", batch_size=64)
    with pytest.warns(UserWarning, match="made without a seed, and 2 workers share it"):
        _multi_worker.warn_if_unseeded(unseeded, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _multi_worker.warn_if_unseeded(unseeded, 1)  # One worker: nothing to overlap.
        _multi_worker.warn_if_unseeded(data.load("digits", "train", batch_size=64, seed=0), 2)


def test_a_malformed_tf_config_is_reported_first_also_once_the_strategy_exists(monkeypatch):
    # Whatever ran before in this process (a strategy made, TensorFlow run), the user's own mistake comes first.
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.is_multi_worker(distribute.strategy("multi_worker"))
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="is not JSON"):
        distribute.strategy("multi_worker")
