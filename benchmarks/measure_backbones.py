"""Re-measure the bundled black boxes' stated accuracies on their real test splits (issue 25).

    nice -n 10 python benchmarks/measure_backbones.py                  # all of them, ~2 min on 2 cores
    nice -n 10 python benchmarks/measure_backbones.py --out benchmarks/backbone_accuracy.json

For every bundled classifier it scores the saved model, as loaded by transformers, on the split its card calls
"test", rebuilt from scratch:

- ``training/embedded/fashion_mnist_resnet``: the full Fashion-MNIST test set (10,000 images, Debian package
  ``dataset-fashion-mnist``) and the bundled subset's test split (1,000 of them);
- ``benchmarks/gt_models/<variant>_resnet``: the generated test split of its README's command
  (``benchmarks/generate.py --variant <variant> --test 1000 --seed 0``: 1,000 images, rendered again here by
  ``benchmarks.generate.make``; every sample has its own seeded generator, so the split is the same images).

and prints (and with ``--out`` writes) each figure next to the one stated in the folder's ``training_results.json``.
A figure that does not match was not computed on that test split.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from training.data import DEFAULT_BACKBONE, DEFAULT_DATASET, load_image_dataset, to_rgb

_ROOT = Path(__file__).resolve().parent.parent

GT_MODELS = _ROOT / "benchmarks" / "gt_models"
#: (folder, the key of its stated figure in training_results.json, how to rebuild the test split it names)
BACKBONES = [
    (Path(DEFAULT_BACKBONE), "full_test_accuracy", ("fashion_mnist_full_test",)),
    (Path(DEFAULT_BACKBONE), "subset_test_accuracy", ("fashion_mnist_subset_test",)),
    (GT_MODELS / "cluttered_resnet", "full_test_accuracy", ("generated", "cluttered", 1000, 0)),
    (GT_MODELS / "part_resnet", "full_test_accuracy", ("generated", "part", 1000, 0)),
]


def test_split(spec):
    """``(images, labels, description)`` of one test split, rebuilt."""
    if spec[0] == "fashion_mnist_full_test":
        from training.build_fashion_mnist_subset import load_fashion_mnist_idx

        images, labels = load_fashion_mnist_idx("test")
        return list(images), labels.tolist(), "full Fashion-MNIST test set"
    if spec[0] == "fashion_mnist_subset_test":
        data, image_col, label_col, _ = load_image_dataset(DEFAULT_DATASET)
        return data["test"][image_col], data["test"][label_col], "bundled subset's test split"
    from benchmarks.generate import make

    _, variant, n, seed = spec
    data = make(variant, "test", n, seed=seed)
    return data["image"], data["label"], f"generate.py --variant {variant} --test {n} --seed {seed}, test split"


@torch.no_grad()
def accuracy(folder: Path, images, labels, batch: int = 500) -> float:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    correct = 0
    for i in range(0, len(labels), batch):
        pixels = processor([to_rgb(im) for im in images[i : i + batch]], return_tensors="pt")["pixel_values"]
        correct += int((model(pixel_values=pixels).logits.argmax(-1) == torch.tensor(labels[i : i + batch])).sum())
    return correct / len(labels)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="write the table as JSON here")
    p.add_argument("--num_threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.num_threads)
    rows = []
    for folder, key, spec in BACKBONES:
        t0 = time.time()
        images, labels, split = test_split(spec)
        measured = accuracy(folder, images, labels)
        stated = json.loads((folder / "training_results.json").read_text()).get(key)
        rows.append(
            {
                "model": str(folder.relative_to(_ROOT)),
                "stated_key": key,
                "stated": stated,
                "measured": round(measured, 4),
                "test_split": split,
                "rows": len(labels),
                "matches": stated is not None and abs(stated - measured) < 5e-5,
            }
        )
        print(
            f"{rows[-1]['model']} {key}: stated {stated}, measured {measured:.4f} on the {split} "
            f"({len(labels)} images, {time.time() - t0:.0f} s)",
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(
            json.dumps({"command": "python benchmarks/measure_backbones.py", "rows": rows}, indent=2) + "\n"
        )
    return rows


if __name__ == "__main__":
    main()
