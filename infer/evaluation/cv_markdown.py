"""The markdown of a cross-validation result (``cv.md``): the recipe-table row, the per-city F1,
the precision spread and the out-of-fold recall by labelled region size."""

from __future__ import annotations

from typing import Any

from groundbreak.infer.evaluation import scene_evaluate


def markdown(result: dict[str, Any], settings: dict[str, Any]) -> str:
    """The CV result as markdown: one recipe-table row and the per-city F1."""
    p = result["pooled"]
    extra = " ".join(settings["train_overrides"]) or "-"
    cities = result["per_city_f1"]
    return "\n".join([
        "| run | config | overrides | chips | OOF F1 | precision | recall | IoU | OOF threshold "
        "| F1 at 0.5 | fold F1 mean ± std (min-max) | train min |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {result['name']} | {settings['config']} | {extra} | {settings['size']}/"
        f"{settings['stride']} | **{p['f1']:.3f}** | {p['precision']:.3f} | {p['recall']:.3f} | "
        f"{p['iou']:.3f} | {result['oof_threshold']:.2f} | {result['pooled_at_0.5']['f1']:.3f} | "
        f"{result['fold_f1_mean']:.3f} ± {result['fold_f1_std']:.3f} "
        f"({min(result['per_fold_f1']):.3f}-{max(result['per_fold_f1']):.3f}) | "
        f"{result['train_minutes']} |",
        "",
        "| " + " | ".join(cities) + " |",
        "|" + " --- |" * len(cities),
        "| " + " | ".join(f"{v:.3f}" for v in cities.values()) + " |",
        "",
        *region_markdown(result),
    ])


def region_markdown(result: dict[str, Any]) -> list[str]:
    """The out-of-fold recall-by-region-size table and the precision spread, as markdown."""
    precision = result.get("fold_precision")
    lines = []
    if precision:
        lines += [f"precision per fold {precision['mean']:.3f} ± {precision['std']:.3f} "
                  f"({precision['min']:.3f}-{precision['max']:.3f})", ""]
    rows = result.get("by_region_size")
    if not rows:
        return lines
    lines += [
        f"| region size (px) | regions | pixel recall | fold mean ± std | regions >= "
        f"{scene_evaluate.FOUND_PERCENT} % found | fold mean ± std |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        recall, found = row.get("fold_pixel_recall"), row.get("fold_regions_found")
        lines.append(
            f"| {row['size']} | {row['regions']} | {row['pixel_recall']:.3f} | "
            + (f"{recall['mean']:.3f} ± {recall['std']:.3f}" if recall else "-")
            + f" | {row['regions_found']:.3f} | "
            + (f"{found['mean']:.3f} ± {found['std']:.3f}" if found else "-") + " |"
        )
    return [*lines, ""]
