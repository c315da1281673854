"""The report: goals, the markdown tables written between the markers of ``benchmarks/README.md``."""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.canvas import KNOWN_ANSWER
from benchmarks.common import DEFAULT_POINT

README_START = "<!-- benchmarks:start -->"
README_END = "<!-- benchmarks:end -->"

# Goals of issues 7 and 8, as (comparison, threshold).
GOALS = {
    "forward_vs_backbone_linear": ("<=", 1.05),
    "explain_vs_forward": ("<=", 1.2),
    "explain_heatmap_pruned_10_vs_forward": ("<=", 1.2),
    "grad_cam_vs_explain_heatmap": (">=", 2.0),
    "grad_cam_vs_explain_heatmap_pruned_10": (">=", 2.0),
    "cached_epoch_speedup": (">=", 20.0),
    "explanation_size_median": ("<=", 10),
    "explanation_size_p90": ("<=", 15),
    "accuracy_drop_vs_dense_points": ("<=", 0.5),
    "max_prototypes_per_class_used": ("<=", 20),
    # Issue 14 (the ground-truth benchmark and the faithfulness section).
    "head_randomisation_spearman": ("<=", 0.3),
    # Issue 22, pre-registered (benchmarks/groundtruth_preregistration.md), per known-answer set: InfoDisent's own
    # prototype map minus the best post-hoc readout of the original (95% lower bound), trained minus untrained head.
    **{f"gt_{v}_own_map_vs_best_posthoc_ci_low": (">=", -0.01) for v in KNOWN_ANSWER},
    **{f"gt_{v}_trained_vs_random_head_ci_low": (">=", 0.10) for v in KNOWN_ANSWER},
    "agreement_with_backbone_head": (">=", 0.99),
}


def _fmt(value, digits=3):
    return "–" if value is None else f"{value:.{digits}f}"


def _pm(stat, scale=100.0, digits=1):
    if stat is None:
        return "–"
    if stat["std"] == 0 and len(stat["values"]) == 1:
        return f"{scale * stat['mean']:.{digits}f}"
    return f"{scale * stat['mean']:.{digits}f} ± {scale * stat['std']:.{digits}f}"


def _goal(name: str, value) -> str:
    if value is None:
        return "–"
    op, threshold = GOALS[name]
    met = _met(op, value, threshold)
    return f"{op} {threshold:g} {'✅ met' if met else '❌ missed'}"


def _met(op: str, value, threshold) -> bool:
    return {"<=": value <= threshold, ">=": value >= threshold, ">": value > threshold}[op]


def goals_status(results: dict) -> dict:
    status = {}
    speed = results.get("speed", {})
    ratios = speed.get("inference", {}).get("ratios", {})
    for key in (
        "forward_vs_backbone_linear",
        "explain_vs_forward",
        "explain_heatmap_pruned_10_vs_forward",
        "grad_cam_vs_explain_heatmap",
        "grad_cam_vs_explain_heatmap_pruned_10",
    ):
        if key in ratios:
            status[key] = ratios[key]
    if "training_epoch" in speed:
        status["cached_epoch_speedup"] = speed["training_epoch"]["cached_epoch_speedup"]
    acc = results.get("accuracy", {})
    if "summary" in acc:
        s = acc["summary"]["infodisent"]
        status["explanation_size_median"] = s["explanation_size_median"]["mean"]
        status["explanation_size_p90"] = s["explanation_size_p90"]["mean"]
        status["max_prototypes_per_class_used"] = s["max_prototypes_per_class_used"]["max"]
        if "accuracy_drop_vs_dense_points" in acc:
            status["accuracy_drop_vs_dense_points"] = acc["accuracy_drop_vs_dense_points"]
        if "agreement" in acc["summary"]["infodisent"]:
            status["agreement_with_backbone_head"] = acc["summary"]["infodisent"]["agreement"]["mean"]
    rnd = results.get("faithfulness", {}).get("randomisation")
    if rnd:
        status["head_randomisation_spearman"] = rnd["head/class_heatmap"]["spearman"]
    for variant, r in results.get("groundtruth", {}).items():
        d = r.get("decision") if isinstance(r, dict) else None
        if d:
            status[f"gt_{variant}_own_map_vs_best_posthoc_ci_low"] = d["as_often_as_best_posthoc"]["difference"]["low"]
            status[f"gt_{variant}_trained_vs_random_head_ci_low"] = d["beats_random_head_by_10pt"]["difference"]["low"]
    return {
        k: {"value": v, "goal": f"{GOALS[k][0]} {GOALS[k][1]}", "met": _met(GOALS[k][0], v, GOALS[k][1])}
        for k, v in status.items()
    }


def markdown_table(results: dict) -> str:
    env = results["environment"]
    lines = [
        f"Measured by `{env['command']}` on {env['device_name']} ({env['device']}, {env['torch_threads']} torch "
        "threads "
        f"[{results['settings'].get('threads_reason', '')}], "
        f"load average at start {', '.join(f'{x:.1f}' for x in env['load_average_at_start'] or [])}), "
        f"commit `{(env['git_commit'] or '?')[:10]}`, torch {env['versions']['torch']}, total "
        f"{results['run_seconds']:.0f} s. Every figure's settings are in `benchmarks/results.json`.",
        "",
    ]
    data = results.get("data")
    if data:
        lines += [
            f"Data: `{Path(data['dataset']).name}` ({data['train_rows']} train / {data['eval_rows']} test images), "
            f"backbone `{Path(data['backbone']).name}` (feature map {'×'.join(map(str, data['feature_map']))}).",
            "",
        ]
    acc = results.get("accuracy")
    if acc:
        s = acc["summary"]
        seeds = len(acc["runs"]["infodisent"])
        ep = acc["runs"]["infodisent"][0]["fit_config"]
        lines += [
            f"**Accuracy** (top-1 %, mean ± std over {seeds} seed(s); "
            + (
                f"{ep['num_train_epochs']} epochs + {ep.get('finetune_epochs') or 0} fine-tune epochs after pruning)"
                if ep.get("num_train_epochs")
                else "the training script's step budget with early stopping)"
            ),
            "",
            "| model | top-1 | agreement with backbone head | explanation size median / p90 |",
            "|---|---|---|---|",
        ]
        names = {
            "infodisent": f"InfoDisent (training defaults: L1 {DEFAULT_POINT[0]:g}, ≤ {DEFAULT_POINT[1]} "
            "prototypes/class)",
            "infodisent_distilled": f"InfoDisent + distillation (weight {results['settings']['distill_weight']})",
            "infodisent_dense": "InfoDisent dense head (no sparsity)",
        }
        for key, label in names.items():
            if key in s:
                lines.append(
                    f"| {label} | {_pm(s[key]['accuracy'])} | {_pm(s[key].get('agreement'))} | "
                    f"{s[key]['explanation_size_median']['mean']:.1f} / {s[key]['explanation_size_p90']['mean']:.1f} |"
                )
        lines.append(f"| linear probe (avg-pooled features) | {_fmt(100 * acc['linear_probe_accuracy'], 1)} | – | – |")
        if acc.get("backbone_head_accuracy") is not None:
            lines.append(f"| backbone's own head | {_fmt(100 * acc['backbone_head_accuracy'], 1)} | 100 | – |")
        full = results.get("full_fashion_mnist")
        if full:
            lines += [
                "",
                f"On the full Fashion-MNIST test set ({full['test_rows']} images; {full['note']}): "
                + ", ".join(f"{k} {_pm(v['accuracy'])}" for k, v in full["summary"].items()),
            ]
        lines.append("")
    abl = results.get("ablations")
    if abl:
        s_acc = acc["summary"] if acc else {}
        lines += [
            f"**Ablations** (seed(s) {abl['seeds']}; each variant trained with the default sparse recipe and with the "
            "dense head)",
            "",
            "| variant | top-1, default recipe | size median / p90 | top-1, dense head | size median / p90 |",
            "|---|---|---|---|---|",
        ]

        def cells(stat):
            if stat is None:
                return "– | –"
            return (
                f"{_pm(stat['accuracy'])} | {stat['explanation_size_median']['mean']:.1f} / "
                f"{stat['explanation_size_p90']['mean']:.1f}"
            )

        if s_acc:
            lines.append(
                f"| InfoDisent (U learned, max pooling, W ≥ 0) | {cells(s_acc.get('infodisent'))} | "
                f"{cells(s_acc.get('infodisent_dense'))} |"
            )
        labels = {
            "rotation_identity": "U = I (no rotation)",
            "pooling_avg": "average pooling instead of max⁺/max⁻",
            "classifier_unconstrained": "W unconstrained (no W ≥ 0)",
        }
        for name, label in labels.items():
            default, dense = abl["variants"].get(f"{name}/default"), abl["variants"].get(f"{name}/dense")
            lines.append(f"| {label} | {cells(default)} | {cells(dense)} |")
        lines.append("")
    trade = results.get("tradeoff")
    if trade:
        lines += [
            f"**Sparsity trade-off** (seed(s) {trade['seeds']}): pick your point with `--sparsity_l1` and "
            "`--max_prototypes_per_class`",
            "",
            "| `--sparsity_l1` | `--max_prototypes_per_class` | top-1 | explanation size median / p90 | "
            "max prototypes per class | distinct channels used |",
            "|---|---|---|---|---|---|",
        ]
        for row in trade["rows"]:
            budget = row["max_prototypes_per_class"] or "– (dense)"
            mark = " **(default)**" if row["default"] else ""
            lines.append(
                f"| {row['sparsity_l1']:g}{mark} | {budget} | {_pm(row['accuracy'])} | "
                f"{row['explanation_size_median']['mean']:.1f} / {row['explanation_size_p90']['mean']:.1f} | "
                f"{row['max_prototypes_per_class_used']} | {row['distinct_channels_used']['mean']:.0f} |"
            )
        lines.append("")
    comp = results.get("compactness")
    if comp:
        lines += [
            "**Compactness and disentanglement** (seed 0, test split)",
            "",
            "| model | size median | size p90 | poles never used (+ evidence / any sign) | RV spatial raw → rotated | "
            "RV pooled raw → rotated |",
            "|---|---|---|---|---|---|",
        ]
        for kind, label in (("default", "InfoDisent (default)"), ("dense", "dense head")):
            if kind in comp:
                c = comp[kind]
                lines.append(
                    f"| {label} | {c['explanation_size_median']:.0f} | {c['explanation_size_p90']:.0f} | "
                    f"{100 * c['unused_poles']:.0f}% / {100 * c['unused_poles_any_sign']:.0f}% of {c['num_poles']} | "
                    f"{c['rv_spatial_raw']:.3f} → {c['rv_spatial_rotated']:.3f} | "
                    f"{c['rv_pooled_raw']:.3f} → {c['rv_pooled_rotated']:.3f} |"
                )
        lines.append("")
    faith = results.get("faithfulness")
    if faith:
        st = faith["settings"]
        lines += [
            f"**Faithfulness** ({st['images']} test images, predicted class; ROAD on {st['road_images']} images, "
            f"percentiles {st['road_percentiles']}). Deletion: lower is better; insertion, ROAD combined: higher is "
            "better; ROAD MoRF: lower is better.",
            "",
            "| heatmap | deletion AUC | insertion AUC | ROAD MoRF | ROAD LeRF | ROAD combined |",
            "|---|---|---|---|---|---|",
        ]
        for name, label in (
            ("infodisent", "InfoDisent class heatmap"),
            ("grad_cam", "Grad-CAM (same model)"),
            ("random", "random order"),
        ):
            e = faith[name]
            lines.append(
                f"| {label} | {e['deletion_auc']:.3f} ± {e['deletion_auc_sem']:.3f} | "
                f"{e['insertion_auc']:.3f} ± {e['insertion_auc_sem']:.3f} | {e['road_morf']:+.3f} | "
                f"{e['road_lerf']:+.3f} | {e['road_combined']:+.3f} |"
            )
        rnd = faith.get("randomisation")
        if rnd:
            cell = lambda k: f"{rnd[k]['spearman']:+.3f} (mean abs {rnd[k]['abs_spearman']:.3f})"  # noqa: E731
            lines += [
                "",
                "Model-randomisation sanity check (head re-initialised, 3 initialisations; Spearman between "
                "the trained model's map and the re-initialised one's, lower is better): class heatmap "
                f"{cell('head/class_heatmap')}; with the former initialisation U ≈ I "
                f"{cell('head/class_heatmap_old_init')}; peak evidence map {cell('head/peak_map')}.",
            ]
        lines.append("")
    if results.get("groundtruth"):
        from benchmarks.groundtruth_trust_report import markdown as groundtruth_markdown

        lines += groundtruth_markdown(results["groundtruth"])
    speed = results.get("speed")
    if speed:
        inf = speed["inference"]
        med, r = inf["seconds_median"], inf["ratios"]
        fmed = inf.get("forward_pair_seconds_median", med)
        st = inf["settings"]
        lines += [
            f"**Speed** ({env['device']}; ResNet-50-sized backbone, random weights, {st['image_size']}², batch "
            f"{st['batch_size']}, {st['num_labels']} classes; {st['repeats']} interleaved rounds, the forward pair "
            f"{len(inf['forward_pair_seconds_all']['infodisent_forward'])}; seconds are medians, ratios medians of "
            "per-round ratios)",
            "",
            "| measurement | seconds | ratio | goal |",
            "|---|---|---|---|",
            f"| backbone + avg-pool + linear head, forward | {fmed['backbone_linear_forward']:.3f} | 1 | |",
            f"| InfoDisent forward | {fmed['infodisent_forward']:.3f} | {r['forward_vs_backbone_linear']:.3f} × "
            "baseline | "
            f"{_goal('forward_vs_backbone_linear', r['forward_vs_backbone_linear'])} |",
            f"| InfoDisent forward, in the explanation series (the reference of the next rows) | "
            f"{med['infodisent_forward']:.3f} | | |",
            f"| InfoDisent full local explanation (`explain`, all prototypes) | {med['explain']:.3f} | "
            f"{r['explain_vs_forward']:.3f} × forward | {_goal('explain_vs_forward', r['explain_vs_forward'])} |",
            f"| … plus its class heatmap (one upsampling) | {med['explain_heatmap']:.3f} | "
            f"{r['explain_heatmap_vs_forward']:.3f} × forward | |",
            f"| … plus heatmap, classifier pruned to 10 prototypes per class (the default recipe) | "
            f"{med['explain_heatmap_pruned_10']:.3f} | {r['explain_heatmap_pruned_10_vs_forward']:.3f} × forward | "
            f"{_goal('explain_vs_forward', r['explain_heatmap_pruned_10_vs_forward'])} |",
            f"| Grad-CAM, same model (backbone carries grad) | {med['grad_cam']:.3f} | "
            f"{r['grad_cam_vs_explain_heatmap']:.2f} × explanation with heatmap | "
            f"{_goal('grad_cam_vs_explain_heatmap', r['grad_cam_vs_explain_heatmap'])} |",
            f"| Grad-CAM vs the pruned model's explanation with heatmap | | "
            f"{r['grad_cam_vs_explain_heatmap_pruned_10']:.2f} × | "
            f"{_goal('grad_cam_vs_explain_heatmap_pruned_10', r['grad_cam_vs_explain_heatmap_pruned_10'])} |",
            f"| Grad-CAM, gradient stopped at the feature map | {med['grad_cam_stop_gradient']:.3f} | "
            f"{r['grad_cam_stop_gradient_vs_explain_heatmap']:.2f} × explanation with heatmap | |",
        ]
        if "training_epoch" in speed:
            t = speed["training_epoch"]
            lines.append(
                f"| training epoch through the backbone / on cached features ({t['settings']['data']}) | "
                f"{t['live_epoch_seconds']:.1f} / {t['cached_epoch_seconds']:.1f} | {t['cached_epoch_speedup']:.1f}× | "
                f"{_goal('cached_epoch_speedup', t['cached_epoch_speedup'])} |"
            )
        if "training_step_resnet50" in speed:
            t = speed["training_step_resnet50"]
            lines.append(
                f"| ResNet-50 size, per batch of {t['settings']['batch_size']}: backbone forward / head training step "
                f"on cached maps | {t['seconds_median']['backbone_forward']:.1f} / "
                f"{t['seconds_median']['head_step']:.1f} | "
                f"epoch ≈ {t['epoch_speedup_estimate']:.1f}× | |"
            )
        p = inf["explain_profile_seconds"]
        lines += [
            "",
            f"Where `explain` spends its time (s, batch {st['batch_size']}, total {p['explain_total']:.3f}): backbone "
            f"{p['backbone']:.3f}, rotation {p['head_rotate']:.3f}, pooling + classifier "
            f"{p['head_pool_classify']:.3f}, "
            f"numpy conversions and {p['prototypes_per_image']:.0f} `Prototype` objects per image "
            f"{p['python_and_numpy']:.3f}; "
            f"class heatmaps for the batch: {p['class_heatmap']:.3f}.",
            "",
        ]
    goals = results.get("goals")
    if goals:
        lines += ["**Goals**", "", "| goal | measured | status |", "|---|---|---|"]
        for key, g in goals.items():
            lines.append(f"| {key} {g['goal']} | {g['value']:.3f} | {'✅ met' if g['met'] else '❌ missed'} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_readme(path: str, table: str) -> None:
    text = Path(path).read_text() if os.path.exists(path) else f"# Benchmarks\n\n{README_START}\n{README_END}\n"
    if README_START not in text or README_END not in text:
        text = text.rstrip() + f"\n\n{README_START}\n{README_END}\n"
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    Path(path).write_text(f"{head}{README_START}\n{table}{README_END}{tail}")
