"""Write the Space's example images: the first test-split image of each class of the bundled Fashion-MNIST subset.

    python spaces/make_examples.py

Reads `training/embedded/fashion_mnist_subset/test-00000.parquet` (Fashion-MNIST, MIT licence, Zalando SE) and writes
`spaces/examples/<index>_<class>.png`, the original 28x28 greyscale PNG bytes, untouched (deterministic).
"""

import json
import os
import re

import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
SUBSET = os.path.join(HERE, "..", "training", "embedded", "fashion_mnist_subset", "test-00000.parquet")


def main() -> None:
    table = pq.read_table(SUBSET)
    names = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]["label"]["names"]
    out_dir = os.path.join(HERE, "examples")
    os.makedirs(out_dir, exist_ok=True)
    seen = set()
    for row in table.to_pylist():  # rows in file order: the first image of each class
        label = row["label"]
        if label in seen:
            continue
        seen.add(label)
        slug = re.sub(r"[^a-z0-9]+", "_", names[label].lower()).strip("_")
        path = os.path.join(out_dir, f"{label}_{slug}.png")
        with open(path, "wb") as f:
            f.write(row["image"]["bytes"])  # the dataset's own PNG bytes (28x28, mode L)
        print(f"{path}  (test id {row['id']})")
        if len(seen) == len(names):
            break


if __name__ == "__main__":
    main()
