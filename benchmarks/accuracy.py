"""Accuracy sections: InfoDisent's top-1 and agreement over seeds (with and without distillation, dense head), the
full Fashion-MNIST test set, the reviewers' ablations and the sparsity trade-off. Every model is trained by the
training script's own `fit_head` through `Bench.train`."""

from __future__ import annotations

from tqdm.auto import tqdm

from benchmarks.common import DEFAULT_POINT, DENSE, FULL_FASHION_MNIST, Bench, Timer, _mean_spread


def section_accuracy(bench: Bench, timer: Timer, cache: dict) -> dict:
    """InfoDisent (the training script's default recipe), with and without distillation, and the dense head, over the
    seeds; the linear probe and the backbone's own head (deterministic)."""
    from training.evaluation import train_linear_probe

    runs = {"infodisent": [], "infodisent_distilled": [], "infodisent_dense": []}
    distill = bench.head_model is not None
    for seed in tqdm(bench.args.seeds, desc="accuracy seeds"):
        model, summary = bench.train(seed)
        runs["infodisent"].append(summary)
        cache.setdefault("models", {})[("default", seed)] = model
        if distill:
            _, summary = bench.train(seed, fit={"distill_weight": bench.args.distill_weight})
            runs["infodisent_distilled"].append(summary)
        dense_model, summary = bench.train(seed, fit=DENSE)
        runs["infodisent_dense"].append(summary)
        cache["models"][("dense", seed)] = dense_model
    probe = train_linear_probe(bench.train_cache, bench.report_cache, seed=0)
    out = {"runs": runs, "linear_probe_accuracy": probe["accuracy"]}
    heads = [r["backbone_head_accuracy"] for r in runs["infodisent"] if r["backbone_head_accuracy"] is not None]
    out["backbone_head_accuracy"] = heads[0] if heads else None
    summary = {}
    for name, rs in runs.items():
        if not rs:
            continue
        summary[name] = {"accuracy": _mean_spread([r["accuracy"] for r in rs])}
        if rs[0]["agreement"] is not None:
            summary[name]["agreement"] = _mean_spread([r["agreement"] for r in rs])
        for key in ("explanation_size_median", "explanation_size_p90", "max_prototypes_per_class_used"):
            summary[name][key] = _mean_spread([r[key] for r in rs])
    out["summary"] = summary
    if "infodisent_dense" in summary:
        out["accuracy_drop_vs_dense_points"] = 100 * (
            summary["infodisent_dense"]["accuracy"]["mean"] - summary["infodisent"]["accuracy"]["mean"]
        )
    if not distill:
        out["note"] = "The backbone has no head for the dataset's classes: no agreement and no distillation."
    return out


def section_full_fashion_mnist(bench: Bench, cache: dict) -> dict:
    """The models trained on the embedded default, evaluated on the full Fashion-MNIST test set (10 000 images)."""
    from training.build_fashion_mnist_subset import full_fashion_mnist_dataset
    from training.evaluation import evaluate
    from training.features import get_or_extract_features

    test = full_fashion_mnist_dataset("test", FULL_FASHION_MNIST)
    kwargs = dict(bench.cache_kwargs, image_column="image", label_column="label", transform=_fmnist_transform(bench))
    any_model = next(iter(cache["models"].values()))
    full_cache = get_or_extract_features(any_model, test, split_name="fashion_mnist_test", **kwargs)
    results = {}
    for (kind, seed), model in cache["models"].items():
        r = evaluate(model, full_cache)
        results.setdefault(kind, []).append({"seed": seed, "accuracy": r["accuracy"], "agreement": r.get("agreement")})
    return {
        "test_rows": len(test),
        "note": "models trained on the embedded default's training split, evaluated on all 10 000 test images",
        "runs": results,
        "summary": {k: {"accuracy": _mean_spread([r["accuracy"] for r in v])} for k, v in results.items()},
    }


def _fmnist_transform(bench: Bench):
    from training.data import make_transform

    return make_transform(bench.image_processor, "image", "label")


ABLATIONS = {
    "rotation_identity": {"rotation_parametrization": "identity"},
    "pooling_avg": {"pooling": "avg"},
    "classifier_unconstrained": {"classifier_constraint": "none"},
}


def section_ablations(bench: Bench, cache: dict) -> dict:
    """The reviewers' ablations, each with the default recipe (L1 + per-class budget + fine-tune) and with the dense
    head (the paper's method, no sparsity), seed by seed; the references are the accuracy section's runs."""
    seeds = bench.args.seeds[:1] if bench.args.quick else bench.args.seeds
    out = {
        "seeds": seeds,
        "reference": "accuracy section: 'infodisent' (default recipe) and 'infodisent_dense' runs with the same seeds",
        "variants": {},
    }
    jobs = [(name, recipe) for recipe in ("default", "dense") for name in ABLATIONS]
    for name, recipe in tqdm(jobs, desc="ablations"):
        model_kwargs = ABLATIONS[name]
        runs = [
            bench.train(seed, fit=DENSE if recipe == "dense" else None, model_kwargs=model_kwargs)[1] for seed in seeds
        ]
        out["variants"][f"{name}/{recipe}"] = {
            "ablation": name,
            "recipe": recipe,
            "model_config": model_kwargs,
            "runs": runs,
            "accuracy": _mean_spread([r["accuracy"] for r in runs]),
            "explanation_size_median": _mean_spread([r["explanation_size_median"] for r in runs]),
            "explanation_size_p90": _mean_spread([r["explanation_size_p90"] for r in runs]),
        }
    return out


def tradeoff_points(quick: bool) -> list[tuple[float, int]]:
    """(sparsity_l1, max_prototypes_per_class) grid around the training script's default (l1, M); 0 = no budget."""
    l1, budget = DEFAULT_POINT
    if quick:
        points = [(0.0, 0), (1.0, 0), (0.0, budget), (l1, 5), (l1, budget), (l1, 20)]
    else:
        points = [
            (0.0, 0),
            (1e-3, 0),
            (1e-2, 0),
            (1e-1, 0),
            (1.0, 0),
            (0.0, budget),
            (l1, 5),
            (l1, budget),
            (l1, 20),
            (10 * l1, budget),
        ]
    return list(dict.fromkeys(points))  # the default may coincide with a grid point


def section_tradeoff(bench: Bench, accuracy: dict | None) -> dict:
    """Accuracy vs explanation size over L1 strengths and per-class budgets (issue 8), seed 0 (all seeds in full)."""
    points = tradeoff_points(bench.args.quick)
    seeds = bench.args.seeds[:1] if bench.args.quick else bench.args.seeds
    reuse = {}
    if accuracy is not None:  # the default recipe and the dense head were already trained with these seeds
        for r in accuracy["runs"]["infodisent"]:
            reuse[(*DEFAULT_POINT, r["fit_config"]["seed"])] = r
        for r in accuracy["runs"]["infodisent_dense"]:
            reuse[(0.0, 0, r["fit_config"]["seed"])] = r
    rows = []
    for l1, budget in tqdm(points, desc="trade-off"):
        runs = []
        for seed in seeds:
            r = reuse.get((l1, budget, seed))
            if r is None:
                fit = {"sparsity_l1": l1, "max_prototypes_per_class": budget}
                r = bench.train(seed, fit=fit)[1]
            runs.append(r)
        rows.append(
            {
                "sparsity_l1": l1,
                "max_prototypes_per_class": budget,
                "default": (l1, budget) == DEFAULT_POINT,
                "runs": runs,
                "accuracy": _mean_spread([r["accuracy"] for r in runs]),
                "explanation_size_median": _mean_spread([r["explanation_size_median"] for r in runs]),
                "explanation_size_p90": _mean_spread([r["explanation_size_p90"] for r in runs]),
                "max_prototypes_per_class_used": max(r["max_prototypes_per_class_used"] for r in runs),
                "distinct_channels_used": _mean_spread([r["distinct_channels_used"] for r in runs]),
            }
        )
    return {"seeds": seeds, "rows": rows}
