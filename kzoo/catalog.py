"""The zoo as data: every model's figures and weights, read without building anything.

`catalog.json` (beside this file) holds what `model_info` computes from built
models and what the weights records say, so `kzoo list` and `kzoo info` need
neither Keras nor TensorFlow. It is generated: after adding a model or
weights, run `python -m kzoo.catalog`; a test fails while it is stale.
"""

from __future__ import annotations

import json
import os

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "catalog.json")


def load() -> dict[str, dict]:
    """The catalog: model name -> its description (see `build`), in `list_models` order."""
    with open(PATH) as f:
        return json.load(f)


def build() -> dict[str, dict]:
    """The catalog computed from the registry (builds every model once) and `kzoo.weights.RECORDS`.

    Each entry is `kzoo.model_info(name)` (lists for tuples) with `weights`
    expanded to `{tag: {preprocessing, input_size, categories, top1, top5, accuracy_source, source,
    format, licence}}`.
    """
    from kzoo import weights
    from kzoo.models import list_models, model_info

    catalog = {}
    for name in list_models():
        info = json.loads(json.dumps(model_info(name)))  # tuples -> lists, as the file holds them
        info["weights"] = {
            tag: {key: getattr(record, key)
                  for key in ("preprocessing", "input_size", "categories", "top1", "top5", "accuracy_source",
                              "source", "format", "licence")}
            for tag in info["weights"]
            for record in [weights.get_record(name, tag)]
        }
        catalog[name] = info
    return catalog


def write(path: str = PATH) -> str:
    """Regenerates the catalog file."""
    from kzoo._io import save_json

    return save_json(build(), path)


if __name__ == "__main__":
    print(f"wrote {write()}")
