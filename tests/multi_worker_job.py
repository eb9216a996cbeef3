"""One worker of the multi-worker tests (started by `python -m kzoo.launch`): LeNet-5 on the digits.

Each worker builds LeNet-5 without a seed, so the workers start from
different random weights, then trains with `training.fit(strategy="multi_worker")`
and writes `OUT/worker<i>.npz`: its first weights, the twin's weights at the
end of training, the Keras 3 model's weights after fit, the losses, and the
first epoch it ran. With `--pause-after-epoch E`, worker 1 writes
`OUT/paused` (its pid) after epoch E and sleeps, once, so a test can kill it.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kzoo import distribute  # noqa: E402

strategy = distribute.strategy("multi_worker")  # First: before TensorFlow runs anything.

import numpy as np  # noqa: E402
import tf_keras  # noqa: E402

import kzoo  # noqa: E402
from kzoo import data, training  # noqa: E402


class Record(tf_keras.callbacks.Callback):
    """Notes the first epoch run and the twin's final weights; pauses worker 1 once."""

    def __init__(self, index, out, pause_after_epoch):
        super().__init__()
        self.index, self.out, self.pause_after_epoch = index, out, pause_after_epoch
        self.first_epoch, self.twin_weights = None, None

    def on_epoch_begin(self, epoch, logs=None):
        if self.first_epoch is None:
            self.first_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        marker = os.path.join(self.out, "paused")
        if self.index == 1 and epoch == self.pause_after_epoch and not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(600)

    def on_train_end(self, logs=None):
        self.twin_weights = self.model.get_weights()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument("--pause-after-epoch", type=int, default=-1)
    args = parser.parse_args()
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]

    train = data.load("digits", "train", batch_size=64, seed=0)
    model = kzoo.lenet5()
    first_weights = model.get_weights()
    record = Record(index, args.out, args.pause_after_epoch)
    history = training.fit(model, train, epochs=args.epochs, strategy="multi_worker", learning_rate=3e-3,
                           checkpoint_dir=args.checkpoint_dir, callbacks=[record], verbose=0)
    np.savez(
        os.path.join(args.out, f"worker{index}.npz"),
        chief=distribute.is_chief(),
        first_epoch=record.first_epoch,
        loss=np.array(history.history["loss"]),
        history_model_is_keras3=history.model is model,
        **{f"start_{i}": w for i, w in enumerate(first_weights)},
        **{f"twin_{i}": w for i, w in enumerate(record.twin_weights)},
        **{f"keras_{i}": w for i, w in enumerate(model.get_weights())},
    )


if __name__ == "__main__":
    main()
