"""Train a standard and an adversarially trained LeNet-5 on MNIST, and measure both under FGSM and PGD.

    python recipes/adversarial_mnist.py [--eps 0.3] [--attack-steps 40] [--adversarial-epochs N] [--export int8]
    python recipes/adversarial_mnist.py --quick      # 1 + 1 epochs, PGD-5 on 200 images: a smoke test

Adversarial training (Madry et al. 2018) crafts PGD examples (--train-attack-steps
steps at --eps) against the current weights in every training step. Both
models are then attacked on the first --eval-samples test images with FGSM and
PGD (--attack-steps) at eps 0 to --eps; with --export, their .tflite files
are measured on the examples crafted against the float models. Writes one
table to the terminal, and robustness.png, examples.png, the two training
curves and metrics.json to --output. Offline without MNIST it trains on the
embedded digits, saying so (--mnist-idx DIR takes MNIST's original files).
"""

from __future__ import annotations

import os
import time

import _recipe  # noqa: E402  first (recipes/ is on sys.path): it loads TensorFlow without its start-up lines

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kzoo  # noqa: E402
from kzoo import export, robust, training  # noqa: E402
from kzoo._io import save_json  # noqa: E402
from _mnist import add_source_flags, load_mnist_or_digits  # noqa: E402

RECIPE = "adversarial_mnist"


def build_parser():
    parser = _recipe.parser(__doc__, quick="1 + 1 epochs, PGD-2 training and PGD-5 attacks on 200 images: a smoke "
                                           "test, to its own folder; not a result")
    _recipe.add(parser, "--epochs", 10, help="epochs of the standard model")
    parser.add_argument("--adversarial-epochs", type=int, default=10, help="epochs of the adversarially trained model")
    parser.add_argument("--eps", type=float, default=0.3, help="the attack budget (L-inf, [0, 1] pixel units)")
    parser.add_argument("--attack-steps", type=int, default=40, help="PGD steps when measuring")
    parser.add_argument("--train-attack-steps", type=int, default=7, help="PGD steps in each training step")
    parser.add_argument("--eval-samples", type=int, default=1000, help="test images attacked")
    _recipe.add(parser, "--batch-size", 128)
    add_source_flags(parser)
    _recipe.add(parser, "--export", "none", choices=["none", *export.MODES])
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.eps < 0:
        _recipe.fail(RECIPE, f"--eps {args.eps}: the budget must be >= 0 (e.g. 0.3 for MNIST).", 2)
    output = _recipe.output_folder(args, RECIPE, "lenet5_adversarial", keeps="metrics.json")
    keras.utils.set_random_seed(args.seed)
    if args.quick:
        args.epochs, args.adversarial_epochs, args.attack_steps, args.train_attack_steps = 1, 1, 5, 2
        args.eval_samples = min(args.eval_samples, 200)
    dataset, train, val, test = load_mnist_or_digits(args, RECIPE, train_batch=args.batch_size, test_batch=1000)
    images, labels = _first(test, args.eval_samples)
    epsilons = sorted({0.0, *np.round(np.linspace(0, args.eps, 4), 4).tolist()})
    models, histories, seconds = {}, {}, {}
    for name, adversarial, epochs in (
            ("standard", None, args.epochs),
            ("adversarial", robust.PGD(eps=args.eps, steps=args.train_attack_steps), args.adversarial_epochs)):
        keras.utils.set_random_seed(args.seed)
        models[name] = kzoo.lenet5()
        start = time.perf_counter()
        histories[name] = training.fit(models[name], train, val, epochs=epochs, adversarial=adversarial,
                                       checkpoint_dir=os.path.join(output, name), seed=args.seed, verbose=0)
        seconds[name] = round((time.perf_counter() - start) / epochs, 2)
    attack = robust.PGD(eps=args.eps, steps=args.attack_steps)
    tables = {name: robust.robust_accuracy(model, (images, labels), attack=attack, epsilons=epsilons)
              for name, model in models.items()}
    metrics = {"dataset": dataset, "eps": args.eps, "epsilons": epsilons, "samples": int(len(labels)),
               "seconds_per_epoch": seconds, "quick": args.quick, "seed": args.seed,
               "models": {name: {"pgd": table["accuracy"], "fgsm": table["fgsm_accuracy"],
                                 "warnings": table["warnings"]} for name, table in tables.items()}}
    if args.export != "none":
        crafted = {name: attack(model, images, labels) for name, model in models.items()}
        for name, model in models.items():
            path = os.path.join(output, f"{name}_{args.export}.tflite")
            export.to_tflite(model, path, mode=args.export, representative_data=train, overwrite=True)
            metrics["models"][name][f"tflite_{args.export}"] = {
                "clean": robust.tflite_accuracy(path, images, labels),
                f"pgd_eps_{args.eps}": robust.tflite_accuracy(path, crafted[name], labels)}
    _print_table(metrics, args)
    skipped = []
    for file_name, draw in (
            ("robustness.png", lambda path: robust.plot_robustness(tables, path)),
            ("examples.png", lambda path: robust.plot_examples(models["standard"], images[:4], labels[:4],
                                                               eps=args.eps, path=path, attack=attack)),
            *((f"curves_{name}.png", lambda path, name=name: training.plot_history(histories[name], path))
              for name in models)):
        try:
            draw(os.path.join(output, file_name))
        except ImportError:
            skipped.append(file_name)
    save_json(metrics, os.path.join(output, "metrics.json"))
    if skipped:
        print(f"{RECIPE}: matplotlib is not installed; skipped {', '.join(skipped)} (pip install matplotlib).")
    smoke = " (--quick: a smoke test, not a result)" if args.quick else ""
    print(f"{RECIPE}: wrote {output}{smoke}")


def _first(dataset, count):
    images, labels = [], []
    for batch_images, batch_labels in dataset:
        images.append(np.asarray(batch_images, "float32"))
        labels.append(np.asarray(batch_labels))
        if sum(map(len, images)) >= count:
            break
    images, labels = np.concatenate(images)[:count], np.concatenate(labels)[:count]
    return (images / 255.0 if images.max() > 1.0 else images), labels


def _print_table(metrics, args):
    header = f"{'model':<19}" + "".join(f"  eps {eps:<5}" for eps in metrics["epsilons"])
    print(f"\nLeNet-5 on {metrics['dataset']}: accuracy of {metrics['samples']} test images under attack")
    print(header)
    for name, row in metrics["models"].items():
        for attack in ("fgsm", "pgd"):
            label = f"{name} {attack if attack == 'fgsm' else f'pgd-{args.attack_steps}'}"
            print(f"{label:<19}" + "".join(f"  {value:9.3f}" for value in row[attack]))
        for key, value in row.items():
            if key.startswith("tflite_"):
                print(f"{name} {key}: " + ", ".join(f"{k} {v:.3f}" for k, v in value.items()))
    print(f"seconds per epoch: {metrics['seconds_per_epoch']}")


if __name__ == "__main__":
    _recipe.run(main)
