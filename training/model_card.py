"""The model card (README.md) of a trained InfoDisent folder, and the upload of that folder to the Hub."""

from __future__ import annotations

import os
import re

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

__all__ = [
    "FASHION_MNIST_HUB_ID",
    "HUB_IGNORE_PATTERNS",
    "NO_TEST_SPLIT_NOTE",
    "build_model_card",
    "is_hub_id",
    "push_folder_to_hub",
]

# Checkpoints (HF-example names step_N / epoch_N), tracker logs and temporary files never go to the Hub.
HUB_IGNORE_PATTERNS = ["step_*", "epoch_*", "logs/*", "*.tmp"]

# Local sources that have a Hub equivalent, for the card's metadata.
FASHION_MNIST_HUB_ID = "zalando-datasets/fashion_mnist"

# all_results.json's splits.no_test_split and the card's warning when a run has no test split.
NO_TEST_SPLIT_NOTE = (
    "every figure is on the validation split, which also took every schedule decision (early stopping, best state, "
    "pruning recovery), so they are optimistic; hold out a test split to report: --test_dir (imagefolders) or "
    "--test_split_name (a split of --dataset_name)"
)


def is_hub_id(name: str | None) -> bool:
    """``owner/name`` or ``name`` that is not an existing local path."""
    if not name or os.path.exists(os.path.expanduser(name)):
        return False
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", name) is not None


def _fmt(value) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, float) else "n/a"


def build_model_card(
    results: dict,
    *,
    model_name: str,
    backbone: str,
    dataset: str,
    command: str,
    id2label: dict[int, str],
    dataset_hub_id: str | None = None,
    dataset_pretty_name: str | None = None,
    has_gallery: bool = False,
    image_size: tuple[int, int] = (224, 224),
) -> ModelCard:
    """A Hub model card: YAML metadata (library_name, pipeline_tag, base_model, datasets, model-index eval results)
    and a body with the metrics, the training command and how to load the model.

    ``dataset`` is the dataset's name as shown (not a path); ``dataset_hub_id`` its Hub id when it has one (a Hub
    dataset, or a local copy of one), the only one that goes into the metadata's ``datasets``. ``backbone`` goes into
    ``base_model`` only when it is a Hub id (local paths mean nothing there). ``image_size`` (width, height) sizes the
    stand-in image of the usage example, which runs as written (from the folder's parent directory when
    ``model_name`` is the folder's name).
    """
    dataset_id = dataset_hub_id
    base_model = backbone if is_hub_id(backbone) else None
    # The Hub's eval results are the test split's when there is one (evaluated once, on the final model); the
    # validation split took the schedule's decisions, so its figures are optimistic.
    has_test = results.get("test_accuracy") is not None
    split, prefix = ("test", "test_") if has_test else ("validation", "")
    accuracy = results.get("test_accuracy") if has_test else results.get("eval_accuracy")
    metrics = [("accuracy", "InfoDisent accuracy", accuracy)]
    if results.get(f"{prefix}agreement") is not None:
        metrics.append(("agreement", "Top-1 agreement with the backbone's classifier", results[f"{prefix}agreement"]))
    eval_results = [
        EvalResult(
            task_type="image-classification",
            task_name="Image Classification",
            dataset_type=dataset_id or os.path.basename(os.path.normpath(dataset)),
            dataset_name=dataset_pretty_name or dataset_id or os.path.basename(os.path.normpath(dataset)),
            dataset_split=split,
            metric_type=metric_type,
            metric_name=metric_name,
            metric_value=round(float(value), 4),
        )
        for metric_type, metric_name, value in metrics
        if value is not None
    ]
    card_data = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        pipeline_tag="image-classification",
        license="mit",
        tags=["infodisent", "interpretability", "prototypes", "image-classification"],
        base_model=base_model,
        datasets=[dataset_id] if dataset_id else None,
        metrics=["accuracy"],
        eval_results=eval_results,
    )
    sizes = (
        f"median {results.get(f'{prefix}explanation_size_median')}, 90th percentile "
        f"{results.get(f'{prefix}explanation_size_p90')} "
        f"prototypes for 90% of the predicted class's positive evidence"
    )
    labels = ", ".join(id2label[i] for i in sorted(id2label))
    repo = model_name
    lines = [
        f"# {model_name}",
        "",
        "An [InfoDisent](https://arxiv.org/abs/2409.10329) model: the frozen backbone "
        f"`{backbone}` explained by prototypes. A learned orthogonal rotation disentangles its last feature map, "
        "each rotated channel keeps only its strongest positive and strongest negative activation, and a nonnegative "
        "linear classifier turns them into class logits, so every logit is exactly the bias plus a sum of prototype "
        "contributions.",
        "",
        f"Classes ({len(id2label)}): {labels}.",
        "",
        f"## Results ({split} split)",
        "",
        "| metric | value |",
        "|---|---|",
        f"| InfoDisent accuracy | {_fmt(accuracy)} |",
        f"| linear probe on average-pooled backbone features | {_fmt(results.get(f'{prefix}linear_probe_accuracy'))} |",
        f"| backbone's own classifier | {_fmt(results.get(f'{prefix}backbone_head_accuracy'))} |",
        f"| top-1 agreement with the backbone's classifier | {_fmt(results.get(f'{prefix}agreement'))} |",
        f"| explanation size | {sizes} |",
        f"| prototypes per class (max) / distinct channels used | {results.get('max_prototypes_per_class_used')} / "
        f"{results.get('distinct_channels_used')} |",
        f"| training time | {results.get('train_runtime_s', float('nan')):.0f} s |",
        "",
        f"{split.capitalize()} examples: "
        f"{results.get(f'{prefix}num_examples') if has_test else results.get('eval_num_examples')}"
        f" (validation, which took the schedule's decisions: {results.get('eval_num_examples')} examples, accuracy "
        f"{_fmt(results.get('eval_accuracy'))}). All numbers are in `all_results.json`.",
        *(
            [
                "",
                f"Test split: {((results.get('splits') or {}).get('test') or {}).get('source', 'test')}, "
                "evaluated once on "
                "the final model; it took no decision (early stopping, best state and pruning used validation).",
            ]
            if has_test
            else ["", f"**No test split: {NO_TEST_SPLIT_NOTE}**"]
        ),
        *(
            [
                "",
                f"**Control run: the training and validation labels were permuted** (seed "
                f"{results['shuffled_labels']['seed']}); the test split kept its true labels. This model is a "
                "baseline for the explanations of the model trained on the true labels, not a classifier.",
            ]
            if results.get("shuffled_labels")
            else []
        ),
        *(
            [
                "",
                "The backbone's own classifier is not compared with this model: "
                f"{results['agreement_missing_reason']}.",
            ]
            if results.get("agreement_missing_reason")
            else []
        ),
        "",
        "## Training",
        "",
        "Trained with the InfoDisent project's `training/train.py` (backbone frozen; rotation, classifier and bias "
        "trained on cached feature maps):",
        "",
        "```bash",
        command,
        "```",
        *(
            ["", f"Training images augmented: {', '.join(results['augment'])} (the backbone ran in the loop)."]
            if results.get("augment")
            else []
        ),
        "",
        "## How to use",
        "",
        "With the `infodisent` package installed, `import modeling_infodisent` registers the model type with the "
        "`Auto*` classes and `pipeline`:",
        "",
        "```python",
        "import modeling_infodisent  # noqa: F401",
        "from PIL import Image",
        "from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline",
        "",
        f'model = AutoModelForImageClassification.from_pretrained("{repo}").eval()',
        f'processor = AutoImageProcessor.from_pretrained("{repo}")',
        f'classifier = pipeline("image-classification", model="{repo}")',
        "",
        f'image = Image.new("RGB", ({image_size[0]}, {image_size[1]}), "white")  # your image: Image.open("photo.jpg")',
        "print(classifier(image)[:3])",
        'inputs = processor(image.convert("RGB"), return_tensors="pt")',
        "explanation = model.explain(inputs.pixel_values)[0]  # logit == bias + sum of prototype contributions",
        "for prototype in explanation.prototypes[:5]:",
        "    print(prototype.name, prototype.contribution, prototype.location)",
        "```",
        "",
        "Without the package, the code files in this repository are used (`pipeline` needs the same flag):",
        "",
        "```python",
        "from transformers import AutoModelForImageClassification, pipeline",
        "",
        f'model = AutoModelForImageClassification.from_pretrained("{repo}", trust_remote_code=True)',
        f'classifier = pipeline("image-classification", model="{repo}", trust_remote_code=True)',
        "```",
    ]
    if has_gallery:
        lines += [
            "",
            "The prototype gallery (the training patches that activate each prototype most) is in "
            "`prototype_gallery.json` and `prototype_gallery.safetensors`; "
            "`modeling_infodisent.gallery.PrototypeGallery.load(folder)` reads it, and "
            "`python -m modeling_infodisent.explain` and the Space show it next to each explanation.",
        ]
    content = f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"
    return ModelCard(content)


def push_folder_to_hub(folder: str, repo_id: str, token: str | None = None, commit_message: str | None = None):
    """Create (or reuse) the model repo and upload the folder, without checkpoints and logs."""
    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, exist_ok=True, repo_type="model")
    api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        commit_message=commit_message or "Upload InfoDisent model",
        ignore_patterns=list(HUB_IGNORE_PATTERNS),
    )
    return repo_url
