"""The ground-truth benchmark's markdown tables (the results come from `benchmarks/groundtruth.py`)."""

from __future__ import annotations

# The baselines every InfoDisent explanation is compared with (paired bootstrap, `groundtruth.py`), one row each in
# the comparison table below.
BASELINES = (
    "centre_prior",
    "brightness",
    "random",
    "grad_cam_original",
    "grad_cam_original_region",
    "score_cam_original",
    "ablation_cam_original",
    "input_x_gradient_original",
    "grad_cam_infodisent",
)

NAMES = {
    "infodisent_before/maps": "InfoDisent before: class heatmap (U ≈ I at init)",
    "infodisent_after/maps": "InfoDisent after: class heatmap (random U at init)",
    "infodisent_after/peaks": "InfoDisent after: peak evidence map",
    "infodisent_before/top1_prototype": "InfoDisent before: top prototype's location",
    "infodisent_after/top1_prototype_cell": "InfoDisent after: top prototype's peak cell (readout before)",
    "infodisent_after/top1_prototype_region": "InfoDisent after: top prototype's upsampled map, region centre "
    "(readout before)",
    "infodisent_after/top1_prototype": "InfoDisent after: top prototype's location (pixel relevance)",
    "infodisent_before/top3_prototypes": "InfoDisent before: top-3 prototypes' locations (share in box)",
    "infodisent_after/top3_prototypes_cell": "InfoDisent after: top-3 prototypes' peak cells (share in box)",
    "infodisent_after/top3_prototypes_region": "InfoDisent after: top-3 prototypes' upsampled maps, region centres "
    "(share in box)",
    "infodisent_after/top3_prototypes": "InfoDisent after: top-3 prototypes' locations (pixel relevance; share in box)",
    "infodisent_after/peaks_region": "InfoDisent after: peak evidence map, region centre",
    "grad_cam_infodisent": "Grad-CAM on the InfoDisent model",
    "grad_cam_original": "Grad-CAM, original classifier",
    "grad_cam_original_region": "Grad-CAM, original classifier, region centre",
    "score_cam_original": "ScoreCAM, original classifier",
    "ablation_cam_original": "AblationCAM, original classifier",
    "input_x_gradient_original": "input × gradient, original classifier",
    "centre_prior": "centre Gaussian (ignores the image)",
    "brightness": "image brightness",
    "random": "random map",
}
LOCATOR_NOTE = {
    "relevance": "the weighted centre of the top 1% of its pixel relevance map (input × gradient of its peak "
    "activation; `benchmarks/groundtruth.py`)",
    "region": "the weighted centre of its upsampled map's 95th-percentile region (`metrics.region_centre`)",
    "cell": "the centre of its peak cell",
}
HEADLINE = ("infodisent_after/top1_prototype", "infodisent_after/peaks")


def _ci(c: dict | None, digits: int = 3) -> str:
    if c is None:
        return "–"
    mark = " ✅" if c["low"] > 0 else (" ❌" if c["high"] < 0 else "")
    return f"{c['difference']:+.{digits}f} [{c['low']:+.{digits}f}, {c['high']:+.{digits}f}]{mark}"


def _variant(name: str, r: dict) -> list[str]:
    st = r["settings"]
    m = r["models"]
    lines = [
        f"*{name}* ({st['test_images']} generated test images; black box {100 * r['original_accuracy']:.1f}% top-1; "
        f"InfoDisent before / after: {100 * m['before']['accuracy']:.1f}% / {100 * m['after']['accuracy']:.1f}% top-1, "
        f"agreement with the black box {100 * (m['before']['agreement'] or 0):.1f}% / "
        f"{100 * (m['after']['agreement'] or 0):.1f}%; maps of the true class; pointing tolerance "
        f"{st['pointing_tolerance_px']} px; a prototype's location: "
        f"{LOCATOR_NOTE.get(st.get('prototype_locator', 'cell'), st.get('prototype_locator'))}; ScoreCAM / AblationCAM "
        f"on the first {min(st.get('costly_images', st['test_images']), st['test_images'])} images, compared on those; "
        f"generator seed of the test split {st.get('test_seed', 0)})",
        "",
        "| explanation | pointing game | energy in box | pointing: Δ vs centre prior [95% CI] | "
        "pointing: Δ vs Grad-CAM on the original [95% CI] |",
        "|---|---|---|---|---|",
    ]
    comps = r["comparisons"]
    for key, label in NAMES.items():
        if key not in r["localisation"]:
            continue
        loc = r["localisation"][key]
        energy = f"{loc['energy']:.3f}" if "energy" in loc else "–"
        ours = key.startswith("infodisent")
        lines.append(
            f"| {label} | {loc['pointing']:.3f} | {energy} | "
            f"{_ci(comps.get(f'{key} vs centre_prior/pointing')) if ours else ''} | "
            f"{_ci(comps.get(f'{key} vs grad_cam_original/pointing')) if ours else ''} |"
        )
    lines += [
        "",
        "Paired bootstrap (95%) of the headline explanations against every baseline (Δ = ours − theirs; ✅ "
        "ours better, ❌ ours worse, neither: not resolved):",
        "",
        "| baseline | top prototype's location: pointing Δ | its upsampled map's region centre (readout before): "
        "pointing Δ | "
        "peak evidence map: pointing Δ | peak evidence map: energy Δ |",
        "|---|---|---|---|---|",
    ]
    for b in BASELINES:
        lines.append(
            f"| {NAMES[b]} | {_ci(comps.get(f'{HEADLINE[0]} vs {b}/pointing'))} | "
            f"{_ci(comps.get(f'{HEADLINE[0]}_region vs {b}/pointing'))} | "
            f"{_ci(comps.get(f'{HEADLINE[1]} vs {b}/pointing'))} | {_ci(comps.get(f'{HEADLINE[1]} vs {b}/energy'))} |"
        )
    lines += [
        "",
        "| InfoDisent | correctness: top-3 prototypes' contribution lost when the generator removes "
        f"{r['correctness']['after']['removed']} | other prototypes' | Δ [CI] | logit drop | same class after | "
        "completeness: positive evidence peaking in the truth | uniform peaks would give | Δ [CI] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k in ("before", "after"):
        c, comp = r["correctness"][k], r["completeness"][k]
        lines.append(
            f"| {k} | {100 * c['top_drop']:.1f}% | {100 * c['other_drop']:.1f}% | {_ci(c['top_vs_other'])} | "
            f"{c['logit_drop_mean']:+.2f} | {100 * c['same_class_after_removal']:.1f}% | "
            f"{100 * comp['share_inside']:.1f}% | {100 * comp['uniform_peaks']:.1f}% | {_ci(comp['vs_uniform'])} |"
        )
    lines += [
        "",
        "| InfoDisent | prototype occlusion: contribution lost, own reported cell (median) | another cell "
        "(median) | Δ [CI] (means) | own cell is the most effective |",
        "|---|---|---|---|---|",
    ]
    for k in ("before", "after"):
        o = r["occlusion"][k]
        lines.append(
            f"| {k} | {100 * o['own_cell_drop_median']:.1f}% | {100 * o['other_cell_drop_median']:.1f}% | "
            f"{_ci(o['own_vs_other'])} | {100 * o['own_cell_is_most_effective']:.0f}% of {o['prototypes']} |"
        )
    rnd = r["randomisation"]
    lines += [
        "",
        "Model-randomisation sanity check (Spearman between the trained model's maps and the maps after "
        "re-initialising; lower is better, a map that survives randomisation does not depend on what was "
        "learned):",
        "",
        "| map | head re-initialised: Spearman / mean abs | last backbone stage re-initialised |",
        "|---|---|---|",
    ]
    for key, label in (
        ("infodisent_before/maps", NAMES["infodisent_before/maps"]),
        ("infodisent_after/maps", NAMES["infodisent_after/maps"]),
        ("infodisent_after/peaks", NAMES["infodisent_after/peaks"]),
        ("grad_cam_original", NAMES["grad_cam_original"]),
    ):
        h, s = rnd.get(f"head/{key}"), rnd.get(f"last_stage/{key}")
        cell = lambda v: "–" if v is None else f"{v['spearman']:+.3f} / {v['abs_spearman']:.3f}"  # noqa: E731
        lines.append(f"| {label} | {cell(h)} | {cell(s)} |")
    lines.append("")
    d = r.get("deletion")
    if d:
        base = ("black", "mean", "blur")
        lines += [
            f"Deletion / insertion ({d['images']} images, {d['steps']} steps, predicted class, each map "
            "scored on "
            "the model it explains; deletion lower is better, insertion and ROAD higher) with three baselines "
            f"for removed pixels (black, the images' mean, a Gaussian blur σ = {d['sigma_blur_px']:.0f} px):",
            "",
            "| model / map | "
            + " | ".join(f"deletion {b}" for b in base)
            + " | "
            + " | ".join(f"insertion {b}" for b in base)
            + " | ROAD combined |",
            "|---|" + "---|" * 7,
        ]
        for key, sc in d["scores"].items():
            model, _, name = key.partition("/")
            cells = [f"{sc[f'deletion_{b}']:.3f}" for b in base] + [f"{sc[f'insertion_{b}']:.3f}" for b in base]
            lines.append(
                f"| {model} / {NAMES.get(name, name)} | " + " | ".join(cells) + f" | {sc['road_combined']:+.3f} |"
            )
        lines += [
            "",
            "Paired bootstrap of InfoDisent's peak evidence map against each row (✅ better, ❌ worse, · not "
            "resolved; columns as above):",
            "",
            "| vs | "
            + " | ".join(f"del. {b}" for b in base)
            + " | "
            + " | ".join(f"ins. {b}" for b in base)
            + " | ROAD |",
            "|---|" + "---|" * 7,
        ]
        for key in d["scores"]:
            if key == "infodisent/infodisent_after/peaks":
                continue
            marks = []
            for m in [f"deletion_{b}" for b in base] + [f"insertion_{b}" for b in base] + ["road_combined"]:
                c = d["comparisons"].get(f"infodisent/infodisent_after/peaks vs {key}/{m}")
                marks.append("–" if c is None else ("✅" if c["low"] > 0 else "❌" if c["high"] < 0 else "·"))
            model, _, name = key.partition("/")
            lines.append(f"| {model} / {NAMES.get(name, name)} | " + " | ".join(marks) + " |")
        lines.append("")
    return lines


def markdown(gt: dict) -> list[str]:
    if "skipped" in gt:
        return [f"**Ground truth**: skipped — {gt['skipped']}", ""]
    lines = [
        "**Ground truth** (`benchmarks/groundtruth.py`: generated data with a known answer, black boxes "
        "of `benchmarks/gt_models/`; InfoDisent trained with the training script's default recipe. *before* = U "
        "initialised near the identity, *after* = U initialised as a random rotation (the current default))",
        "",
    ]
    for variant, title in (
        ("cluttered", "Cluttered canvas — truth: the garment's box"),
        ("part", "Part-defined — truth: the decisive mark's box"),
    ):
        if variant in gt:
            lines += _variant(title, gt[variant])
    return lines
