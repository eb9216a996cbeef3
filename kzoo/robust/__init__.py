"""Adversarial robustness: FGSM and PGD examples, accuracy under attack, the exported file's, and pictures.

    from kzoo import robust
    x_adv = robust.pgd(model, images, eps=0.3, steps=40)      # labels=None: the model's own predictions
    table = robust.robust_accuracy(model, (x_test, y_test), attack="pgd", epsilons=(0, .1, .2, .3))
    robust.plot_examples(model, images, eps=0.2, path="examples.png")

- `attacks`: `fgsm`, `pgd` and their settings (`PGD`, `FGSM`), on the logits, in [0, 1].
- `evaluation`: `robust_accuracy` (with its gradient-masking checks),
  `tflite_accuracy` (the exported file under transferred examples), the plots.
"""

from kzoo.robust.attacks import FGSM, NORMS, PGD, fgsm, logits_function, pgd
from kzoo.robust.evaluation import EPSILONS, plot_examples, plot_robustness, robust_accuracy, tflite_accuracy

__all__ = ["EPSILONS", "FGSM", "NORMS", "PGD", "fgsm", "logits_function", "pgd", "plot_examples", "plot_robustness",
           "robust_accuracy", "tflite_accuracy"]
