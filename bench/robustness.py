"""Robustness on MNIST: a standard and an adversarially trained LeNet-5 under FGSM and PGD-40, float and int8.

Data: `../shared/data/mnist`, MNIST's t10k file. The first 8,000 images train
(the last 800 of those validate) and the last 2,000 are attacked. Both
models get the same epochs, learning rate and seed; the adversarial one
trains on PGD-7 examples at --train-eps, crafted per batch.

The table gives accuracy at eps 0, 0.05, ..., 0.3 (L-inf) under FGSM and
PGD-40 (step 2.5 * eps / 40, one random start). It also gives the int8
`.tflite` of each model under the PGD examples crafted against its float
model (a transfer attack), and the seconds per epoch of each training.
One JSON object per line. --model takes a wider registry model (built for
28x28x1 inputs) to show where LeNet-5's capacity is the limit; --examples
writes the panda/gibbon figure of both models on the first test digits.

    python bench/robustness.py [--epochs 10] [--train-eps 0.2] [--adversarial-ratio 1.0]
    python bench/robustness.py --model resnet20 --train-eps 0.3 --test-samples 500
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST = os.path.join(os.path.dirname(ROOT), "shared", "data", "mnist")
EPSILONS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-eps", type=float, default=0.2)
    parser.add_argument("--adversarial-ratio", type=float, default=1.0, help="share of each batch made adversarial")
    parser.add_argument("--attack-steps", type=int, default=40)
    parser.add_argument("--model", default="lenet5", help="registry model, built for 28x28x1 and 10 classes")
    parser.add_argument("--test-samples", type=int, default=2000, help="the last N of the 2,000 test images")
    parser.add_argument("--examples", metavar="PNG", help="also write the examples figure (eps --train-eps) here")
    args = parser.parse_args()
    import keras

    import kzoo
    from kzoo import data, export, robust, training

    images = data.read_idx(os.path.join(MNIST, "t10k-images-idx3-ubyte.gz"))
    labels = data.read_idx(os.path.join(MNIST, "t10k-labels-idx1-ubyte.gz")).astype("int32")
    train = data.from_arrays(images[:7200], labels[:7200], batch_size=128, seed=0, num_classes=10)
    val = data.from_arrays(images[7200:8000], labels[7200:8000], batch_size=500, shuffle=False, num_classes=10)
    test_x, test_y = images[-args.test_samples:].astype("float32")[..., None] / 255.0, labels[-args.test_samples:]
    cpu = platform.processor() or platform.machine()
    models = {}
    for name, adversarial in (("standard", None), ("adversarial", robust.PGD(eps=args.train_eps, steps=7))):
        keras.utils.set_random_seed(0)
        model = kzoo.get_model(args.model, input_shape=(28, 28, 1), num_classes=10)
        start = time.perf_counter()
        training.fit(model, train, val, epochs=args.epochs, learning_rate=3e-3, adversarial=adversarial,
                     adversarial_ratio=args.adversarial_ratio, seed=0, verbose=0)
        models[name] = model
        print(json.dumps({"bench": "robustness", "model": name, "architecture": args.model, "epochs": args.epochs,
                          "seconds_per_epoch": round((time.perf_counter() - start) / args.epochs, 2),
                          "train_attack": None if adversarial is None else
                          f"pgd-7 eps {args.train_eps}, ratio {args.adversarial_ratio}",
                          "cpu": cpu}), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for name, model in models.items():
            table = robust.robust_accuracy(model, (test_x, test_y), attack=robust.PGD(steps=args.attack_steps),
                                           epsilons=EPSILONS)
            path = os.path.join(folder, f"{name}.tflite")
            export.to_tflite(model, path, mode="int8", representative_data=train)
            int8 = []
            for eps in EPSILONS:
                crafted = robust.PGD(eps=eps, steps=args.attack_steps)(model, test_x, test_y)
                int8.append(round(robust.tflite_accuracy(path, crafted, test_y), 4))
            print(json.dumps({"bench": "robustness", "model": name, "architecture": args.model,
                              "epsilons": list(EPSILONS),
                              "fgsm": [round(a, 4) for a in table["fgsm_accuracy"]],
                              f"pgd{args.attack_steps}": [round(a, 4) for a in table["accuracy"]],
                              f"int8_tflite_pgd{args.attack_steps}_transfer": int8,
                              "warnings": table["warnings"], "samples": table["samples"], "cpu": cpu}), flush=True)
    if args.examples:
        pictures = {name: robust.plot_examples(model, test_x[:4], test_y[:4], eps=args.train_eps,
                                               path=args.examples.replace(".png", f"_{name}.png"))
                    for name, model in models.items()}
        print(json.dumps({"bench": "robustness", "examples": pictures}), flush=True)


if __name__ == "__main__":
    main()
