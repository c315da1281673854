#!/usr/bin/env bash
# Build spaces/model/, the Space's bundled demo model:
#   1. the project's own training command on the embedded default (the bundled Fashion-MNIST subset and the
#      bundled ResNet backbone; all defaults, seed 0) into outputs/ (git-ignored; its feature cache in a temp folder);
#   2. its prototype gallery at the images' own resolution (28 px patches, 4 per prototype pole) so that the
#      folder stays a few MB (train.py's gallery uses 64 px patches: about 12 MB for the 256 poles at top-4);
#   3. the files the Space needs copied to spaces/model/, the model code by spaces/sync_model_code.py.
# Usage: bash spaces/build_demo_model.sh          (from anywhere; about 5-10 minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export HF_HUB_OFFLINE=1 INFODISENT_CACHE="$WORK/cache"

# >>> training-command
accelerate launch --config_file training/accelerate_config.yaml -q training/train.py --output_dir outputs/infodisent-fashion-mnist-demo --gallery_top_k 0 --seed 0
# <<< training-command

MODEL=outputs/infodisent-fashion-mnist-demo
"$PYTHON" - "$MODEL" <<'PY'
import sys

from modeling_infodisent.gallery import compute_gallery, load_model_and_gallery
from training.data import DEFAULT_DATASET, load_image_dataset

folder = sys.argv[1]
model, processor, _ = load_model_and_gallery(folder)
# The training split train.py used (the subset's 5,000 train images; its 1,000 test images are the validation split).
dataset, image_column, label_column, _ = load_image_dataset(DEFAULT_DATASET, seed=0)
gallery = compute_gallery(
    model, dataset["train"], processor, top_k=4, patch_size=28, image_column=image_column, label_column=label_column
)
gallery.save(folder)
print(gallery)
PY

rm -rf spaces/model
mkdir -p spaces/model
for f in config.json model.safetensors preprocessor_config.json \
         prototype_gallery.json prototype_gallery.safetensors all_results.json README.md; do
    if [ -f "$MODEL/$f" ]; then cp "$MODEL/$f" spaces/model/; fi
done
# The model code (modeling_infodisent.py and the siblings it imports) from the package; a test checks it stays equal.
"$PYTHON" spaces/sync_model_code.py --target spaces/model
# Paths relative to the repository, not to this machine; and say where the gallery comes from.
sed -i "s#$(pwd)/##g" spaces/model/README.md spaces/model/all_results.json spaces/model/config.json
cat >> spaces/model/README.md <<'MD'

## Prototype gallery

`prototype_gallery.json` / `.safetensors` (read with `modeling_infodisent.gallery.PrototypeGallery.load`): the 4 most
activating training images of every prototype pole, as 28 px patches, computed by `spaces/build_demo_model.sh` with
`compute_gallery(model, train_split, processor, top_k=4, patch_size=28)` on the same 5,000 training images.
MD
du -sh spaces/model
ls -l spaces/model
