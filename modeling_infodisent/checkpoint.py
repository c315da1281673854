"""The checks that make loading an InfoDisent checkpoint strict: safetensors weights only (a pickle is never
opened), and a checkpoint that does not fill the model exactly is refused with the keys named.

This file travels with the weights (``save_pretrained`` copies the modeling file's relative imports for
``trust_remote_code=True`` loading), so it imports only transformers.
"""

from __future__ import annotations

import os

from transformers.utils import logging as transformers_logging

__all__ = ["check_finite_weights", "check_loading_info", "check_weight_files", "load_strictly"]

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


def load_strictly(load, pretrained_model_name_or_path, *args, **kwargs):
    """``(model, loading report)`` from ``load`` (`PreTrainedModel.from_pretrained`): safetensors only, and refused
    (`check_loading_info`) unless the checkpoint fills the model exactly. The report is transformers' own
    (``output_loading_info=True``); its warning table is silenced because the error names the same keys."""
    path = str(pretrained_model_name_or_path)
    if kwargs.pop("use_safetensors", None) is False:
        raise ValueError("InfoDisent checkpoints are safetensors only: use_safetensors=False is not supported.")
    folder = os.path.join(path, kwargs["subfolder"]) if kwargs.get("subfolder") else path
    if os.path.isdir(folder):
        check_weight_files(folder, kwargs.get("variant"))  # names the folder and the pickles that are not read
    kwargs.pop("output_loading_info", None)
    allow_mismatched = bool(kwargs.pop("ignore_mismatched_sizes", False))
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        model, info = load(
            pretrained_model_name_or_path,
            *args,
            use_safetensors=True,  # transformers then never falls back to a pickled pytorch_model.bin
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # mismatches are reported in `info`, and refused below unless allowed
            **kwargs,
        )
    except Exception as error:
        if type(error).__name__ != "SafetensorError":  # safetensors' own message names no file
            raise
        raise OSError(f"The weights of {path!r} are not a readable safetensors file: {error}.") from error
    finally:
        transformers_logging.set_verbosity(verbosity)
    check_loading_info(path, info, allow_mismatched=allow_mismatched)
    check_finite_weights(path, model)
    return model, info


def check_finite_weights(path: str, model) -> None:
    """`OSError` naming the tensors when the loaded weights hold NaN or infinite values. A model folder with NaN
    weights was explained as "predicted 'T-shirt/top' (nan%)" with exit 0 (issue 26); every loader (the explain CLI,
    the Space, `from_pretrained`, `load_model_and_gallery`) comes through here, whatever the gallery says."""
    import torch

    bad = {}
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                count = int((~torch.isfinite(tensor)).sum())
                if count:
                    bad[key] = count
    if bad:
        first = ", ".join(f"{k} ({n} of {model.state_dict()[k].numel()})" for k, n in list(bad.items())[:3])
        more = f" and {len(bad) - 3} more tensors" if len(bad) > 3 else ""
        raise OSError(f"The weights of {path!r} hold NaN or infinite values, refusing to load them: {first}{more}.")
