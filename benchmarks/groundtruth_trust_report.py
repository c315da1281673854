"""Markdown tables of `benchmarks/groundtruth_trust.py`'s results (written into docs/faithfulness.md between the
markers below)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.groundtruth_audit import table as audit_table
from benchmarks.groundtruth_maps import INFODISENT_OWN, READOUTS

START, END = "<!-- groundtruth-trust:start -->", "<!-- groundtruth-trust:end -->"
METHODS = {
    "infodisent_prototype": "InfoDisent: top prototype's own map",
    "infodisent_class": "InfoDisent: class map (W·J)",
    "grad_cam_infodisent": "Grad-CAM on the InfoDisent model",
    "grad_cam_original": "Grad-CAM, original",
    "score_cam_original": "ScoreCAM, original",
    "ablation_cam_original": "AblationCAM, original",
    "input_x_gradient_original": "input × gradient, original",
}
CONTROL_NAMES = {
    "random_head": "head drawn again (untrained)",
    "shuffled_head": "head trained on permuted labels",
    "cascade_last_stage": "cascade: head + last stage drawn again",
    "cascade_two_stages": "cascade: head + last two stages drawn again",
}


def _pct(c: dict) -> str:
    return f"{100 * c['mean']:.1f} [{100 * c['low']:.1f}, {100 * c['high']:.1f}]"


def _diff(c: dict) -> str:
    return f"{100 * c['mean']:+.1f} [{100 * c['low']:+.1f}, {100 * c['high']:+.1f}]"


def _name(key: str) -> str:
    method, _, readout = key.partition("/")
    control, _, method = method.rpartition(":")
    text = f"{METHODS.get(method, method)}, {readout.replace('_', ' ')}"
    return f"{text} ({CONTROL_NAMES[control]})" if control else text


def _set(variant: str, r: dict, model_kwargs: dict | None = None) -> list[str]:
    if "skipped" in r:
        return [f"**{variant}**: {r['skipped']}.", ""]
    s, acc, grid = r["summary"], r["accuracy"], r["grid"]
    any_key = next(iter(s["table"].values()))["all"]
    grid_text = f"feature grid {grid[0]}×{grid[1]}"
    if model_kwargs:  # e.g. a dilated InfoDisent: its own maps on a finer grid than the original classifier's
        own = r.get("infodisent_grid")
        options = ", ".join(f"{k}={v}" for k, v in model_kwargs.items())
        grid_text += f" (the original's); InfoDisent {options}" + (f", grid {own[0]}×{own[1]}" if own else "")
    lines = [
        f"**{variant}** ({any_key['images']} test images, {any_key['black_boxes']} black boxes × {any_key['seeds']} "
        f"head seeds; {grid_text}; black boxes "
        f"{', '.join(f'{100 * a:.1f}%' for a in acc['original'])} "
        f"top-1; InfoDisent {', '.join('/'.join(f'{100 * a:.1f}' for a in row) for row in acc['infodisent'])}% per "
        f"head seed; both correct on {100 * acc['both_correct_share']:.1f}% of image × seed pairs)",
        "",
        "Pointing (% of images whose point lies in the truth box grown by the tolerance) [95% interval over black "
        "boxes, head seeds and images]; all images / images both the InfoDisent model and the original classify "
        "correctly:",
        "",
        "| map | "
        + " | ".join(f"{r.replace('_', ' ')}: all" for r in READOUTS)
        + " | "
        + " | ".join(f"{r.replace('_', ' ')}: both correct" for r in READOUTS)
        + " |",
        "|---|" + "---|" * (2 * len(READOUTS)),
    ]
    for method, label in METHODS.items():
        if f"{method}/peak_cell" not in s["table"]:
            continue
        cells = [_pct(s["table"][f"{method}/{ro}"]["all"]) for ro in READOUTS]
        cells += [_pct(s["table"][f"{method}/{ro}"]["both_correct"]) for ro in READOUTS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    d = r["decision"]
    c, g = d["as_often_as_best_posthoc"], d["beats_random_head_by_10pt"]
    lines += [
        "",
        f"Pre-registered comparison: InfoDisent's best own readout (**{_name(s['ours'])}**) − the best post-hoc "
        "readout "
        f"on the original (**{_name(s['best_posthoc'])}**): {_diff(c['difference'])} pt, a {c['reading']}; goal "
        f"(lower bound ≥ −1 pt) **{'met' if c['met'] else 'not met'}**. Trained − untrained head on the same readout: "
        f"{_diff(g['difference'])} pt; goal (lower bound ≥ +10 pt) **{'met' if g['met'] else 'not met'}**.",
        "",
        "Controls, trained − control on the same readout and images (pt; a map that does not depend on what was learnt "
        "scores the same after the control):",
        "",
        "| map, control | " + " | ".join(ro.replace("_", " ") for ro in READOUTS) + " | Spearman trained vs control: "
        "mean / mean abs |",
        "|---|" + "---|" * (len(READOUTS) + 1),
    ]
    comps = s["comparisons"]
    for method in (*INFODISENT_OWN, "grad_cam_original", "input_x_gradient_original"):
        for control in CONTROL_NAMES:
            label = CONTROL_NAMES[control]
            keys = [f"trained_vs_{control}:{method}/{ro}" for ro in READOUTS]
            if keys[0] not in comps:
                continue
            rho = s["spearman"].get(f"{control}:{method}")
            rho_text = f"{rho['signed']['mean']:+.2f} / {rho['abs']['mean']:.2f}" if rho else "–"
            lines.append(
                f"| {METHODS[method]}, {label} | "
                + " | ".join(_diff(comps[k]["all"]) for k in keys)
                + f" | {rho_text} |"
            )
    lines.append("")
    return lines


def markdown(results: dict) -> list[str]:
    if "skipped" in results:
        return [f"**Ground truth**: skipped — {results['skipped']}", ""]
    st = results["settings"]
    sets = [v for v in [*st.get("audit_only", []), *st["sets"]] if v in results]
    lines = [
        f"Known-answer benchmark (`benchmarks/groundtruth_trust.py`, issue 22): test split seed {st['test_seed']}, "
        f"pointing tolerance {st['tolerance_px']} px, {results.get('seconds', 0):.0f} s"
        + (f"; command: `{results['command']}`" if results.get("command") else "")
        + ".",
        "",
        "SHORTCUT AUDIT (model-free readouts on the same test images; a set is scored only if each is within 10 pt of "
        "chance):",
        "",
        *audit_table([results[v]["audit"] for v in sets]),
        "",
    ]
    for v in sets:
        lines += _set(v, results[v], st.get("model_kwargs"))
    return lines


def write_docs(path: str, text: str) -> None:
    """Replace the block between `START` and `END` in `path` (appended when the markers are absent), whole file
    written at once."""
    p = Path(path)
    old = p.read_text() if p.exists() else ""
    block = f"{START}\n{text.rstrip()}\n{END}"
    if START in old and END in old:
        new = old[: old.index(START)] + block + old[old.index(END) + len(END) :]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(new)
    tmp.replace(p)
