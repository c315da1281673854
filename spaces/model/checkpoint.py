"""The checks that make loading an InfoDisent checkpoint strict: safetensors weights only (a pickle is never
opened), and a checkpoint that does not fill the model exactly is refused with the keys named.

This file travels with the weights (``save_pretrained`` copies the modeling file's relative imports for
``trust_remote_code=True`` loading), so it imports only the standard library.
"""

from __future__ import annotations

import os

__all__ = ["check_loading_info", "check_weight_files"]

# The tensors whose shape is the class count: a mismatch of these only is "another number of classes".
CLASSIFIER_KEYS = ("head.classifier.", "original_classifier.")


def check_weight_files(folder: str, variant: str | None = None) -> None:
    """A local model folder must hold the model's own safetensors weights (``model.safetensors`` or the index of a
    sharded checkpoint), not merely some ``*.safetensors`` file (the prototype gallery is one) next to a pickle."""
    stem = f"model.{variant}" if variant else "model"
    names = (f"{stem}.safetensors", f"{stem}.safetensors.index.json")
    if not any(os.path.isfile(os.path.join(folder, name)) for name in names):
        pickles = sorted(f for f in os.listdir(folder) if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt")))
        note = f" ({', '.join(pickles)} is not read: pickles are never loaded)" if pickles else ""
        raise OSError(
            f"{folder!r} has no model weights: neither {names[0]} nor {names[1]}{note}. Is it the right folder?"
        )


def check_loading_info(path: str, info: dict, allow_mismatched: bool = False) -> None:
    """Refuse a load that left parameters random or ignored tensors of the checkpoint: `info` is transformers'
    loading report (``from_pretrained(..., output_loading_info=True)``)."""

    def listing(keys) -> str:
        keys = sorted(keys)
        return ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")

    mismatched = info.get("mismatched_keys") or ()
    if mismatched and not allow_mismatched and all(key.startswith(CLASSIFIER_KEYS) for key, _, _ in mismatched):
        stored, asked = next((a[0], b[0]) for key, a, b in mismatched if key.endswith("bias"))
        raise ValueError(
            f"The checkpoint {path!r} has a classifier for {stored} classes but you asked for {asked} (id2label / "
            "num_labels): a different number of classes. Pass ignore_mismatched_sizes=True to start a fresh "
            "classifier, or use InfoDisentForImageClassification.from_backbone."
        )
    problems = []
    if info.get("missing_keys"):
        problems.append(f"missing from the checkpoint (would be left random): {listing(info['missing_keys'])}")
    if info.get("unexpected_keys"):
        problems.append(f"in the checkpoint but not in the model: {listing(info['unexpected_keys'])}")
    if mismatched and not allow_mismatched:
        problems.append(
            "wrong shape: " + listing(f"{key} (checkpoint {tuple(a)}, model {tuple(b)})" for key, a, b in mismatched)
        )
    if info.get("error_msgs"):
        problems.append("errors: " + "; ".join(str(m) for m in info["error_msgs"]))
    if problems:
        raise OSError(
            f"The checkpoint {path!r} does not match the InfoDisent model it declares, refusing to load it: "
            + "; ".join(problems)
            + "."
        )
