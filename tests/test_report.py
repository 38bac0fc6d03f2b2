"""Results tables, summary.json schema and the generated README."""
from __future__ import annotations

import copy
import json
import math

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from kyam_lib.experiments import report
from kyam_lib.io import write_json


def leaf(mean: float, std: float = 0.0, n: int = 1) -> dict:
    return {"mean": mean, "std": std, "n": n}


def block(miou=0.5, sparsity: float | None = 0.6) -> dict:
    return {"miou": leaf(miou), "pixel_acc": leaf(0.8), "classifier_acc": leaf(0.9),
            "sparsity": None if sparsity is None else leaf(sparsity)}


def valid_summary() -> dict:
    return {
        "preset": "quick",
        "seeds": [0],
        "main": block(),
        "ablations": {name: block() for name in ("full", "no_masking", "no_reg", "no_pruning",
                                                 "no_masking_no_pruning")},
        "baselines": {"cam": block(sparsity=None), "mctformer": block(sparsity=None)},
        "lambda": {ds: {lam: block() for lam in ("0", "0.001", "0.01", "0.1")} for ds in ("shapes", "regions")},
        "mask_ratio": {r: block() for r in ("0", "0.25", "0.5", "0.75", "1.0")},
        "segmentation": {"pseudo": block(sparsity=None), "full_supervision": block(sparsity=None)},
    }


# ---- aggregation -------------------------------------------------------------------------------
def test_metric_leaf_mean_and_sample_std():
    got = report.metric_leaf([0.2, 0.4, 0.9])
    assert got["n"] == 3
    assert got["mean"] == pytest.approx(0.5)
    # sample std: sqrt(((0.3)^2 + (0.1)^2 + (0.4)^2) / 2) = sqrt(0.13)
    assert got["std"] == pytest.approx(math.sqrt(0.13))


def test_metric_leaf_single_value_missing_values_and_none():
    assert report.metric_leaf([0.25]) == {"mean": 0.25, "std": 0.0, "n": 1}
    assert report.metric_leaf([0.2, None, float("nan"), 0.4]) == pytest.approx({"mean": 0.3, "std": math.sqrt(0.02), "n": 2})
    assert report.metric_leaf([None, None]) is None
    assert report.metric_leaf([]) is None


def test_metric_block_and_blocks_follow_the_requested_order():
    rows = pd.DataFrame([
        {"label": "b", "miou": 0.1, "pixel_acc": 0.5, "classifier_acc": 0.7, "sparsity": None},
        {"label": "a", "miou": 0.3, "pixel_acc": 0.6, "classifier_acc": 0.8, "sparsity": 0.5},
        {"label": "a", "miou": 0.5, "pixel_acc": 0.6, "classifier_acc": 0.8, "sparsity": 0.5},
    ])
    blocks = report.metric_blocks(rows, "label", ["a", "b"])
    assert list(blocks) == ["a", "b"]
    assert blocks["a"]["miou"]["mean"] == pytest.approx(0.4)
    assert blocks["a"]["miou"]["n"] == 2
    assert blocks["b"]["sparsity"] is None
    with pytest.raises(report.SummaryError, match=r"\['c'\]"):
        report.metric_blocks(rows, "label", ["a", "c"])


def test_format_mean_std():
    assert report.format_mean_std(0.5123, 0.0134, 3) == "51.2 ± 1.3"
    assert report.format_mean_std(0.5123, 0.0134, 1) == "51.2"
    assert report.format_mean_std(None) == "—"
    assert report.format_mean_std(1.5, percent=False, digits=2) == "1.50"


def test_markdown_table_exact():
    frame = pd.DataFrame({"a": [1, 2], "b": [0.123456, None], "c": ["x|y", "z"]})
    assert report.markdown_table(frame) == (
        "| a | b | c |\n|---|---|---|\n| 1 | 0.1235 | x\\|y |\n| 2 | — | z |\n")


def test_comparison_table_numbers_display_and_paper_columns():
    rows = pd.DataFrame([
        {"label": "full", "seed": 0, "miou": 0.40, "miou_train": 0.5, "pixel_acc": 0.8, "classifier_acc": 0.9, "sparsity": 0.5},
        {"label": "full", "seed": 1, "miou": 0.60, "miou_train": 0.5, "pixel_acc": 0.8, "classifier_acc": 0.9, "sparsity": 0.5},
        {"label": "cam", "seed": 0, "miou": 0.20, "miou_train": 0.3, "pixel_acc": 0.7, "classifier_acc": 0.8, "sparsity": None},
    ])
    numbers, shown = report.comparison_table(rows, order=["full", "cam"], paper={"full": {"paper X %": 73.7}})
    assert numbers["label"].tolist() == ["full", "cam"]
    assert numbers["miou_mean"].tolist() == pytest.approx([0.5, 0.2])
    assert numbers["miou_std"][0] == pytest.approx(math.sqrt(0.02))
    assert numbers["paper X %"].tolist()[0] == 73.7 and math.isnan(numbers["paper X %"].tolist()[1])
    assert shown["mIoU val %"].tolist() == ["50.0 ± 14.1", "20.0"]
    assert shown["head sparsity %"].tolist() == ["50.0 ± 0.0", "—"]
    assert shown["seeds"].tolist() == [2, 1]
    assert shown.columns[0] == "method"
    assert shown["paper X %"].tolist() == ["73.7", "—"]


def test_table8_layout_places_each_metric_under_its_lambda():
    rows = pd.DataFrame([
        {"dataset": "shapes", "label": lam, "miou": m, "pixel_acc": 0.5, "classifier_acc": 0.6, "sparsity": s}
        for lam, m, s in (("0", 0.10, 0.0), ("0.001", 0.20, 0.25), ("0.01", 0.30, 0.5), ("0.1", 0.40, 0.75))
    ])
    table = report.table8_layout(rows, source="ours")
    miou = table[(table["metric"] == "mIoU %")].iloc[0]
    sparsity = table[(table["metric"] == "sparsity %")].iloc[0]
    assert [miou[f"λ={k}"] for k in ("0", "0.001", "0.01", "0.1")] == ["10.0", "20.0", "30.0", "40.0"]
    assert [sparsity[f"λ={k}"] for k in ("0", "0.001", "0.01", "0.1")] == ["0.0", "25.0", "50.0", "75.0"]
    paper = report.paper_table8()
    dfc = paper[(paper["dataset"] == "DFC2020") & (paper["metric"] == "mIoU %")].iloc[0]
    assert [dfc[f"λ={k}"] for k in ("0", "0.001", "0.01", "0.1")] == [59.8, 64.3, 67.2, 65.5]
    assert set(paper["source"]) == {report.PAPER_LABEL}


def test_segmentation_table_ratio_per_seed():
    rows = pd.DataFrame([
        {"supervision": "pseudo", "seed": 0, "miou": 0.3, "pixel_acc": 0.6},
        {"supervision": "full_supervision", "seed": 0, "miou": 0.6, "pixel_acc": 0.8},
        {"supervision": "pseudo", "seed": 1, "miou": 0.4, "pixel_acc": 0.6},
        {"supervision": "full_supervision", "seed": 1, "miou": 0.5, "pixel_acc": 0.6},
    ])
    assert report.seed_ratios(rows, "miou", "pseudo", "full_supervision") == pytest.approx([0.5, 0.8])
    numbers, shown, ratio = report.segmentation_table(rows)
    assert ratio["mean"] == pytest.approx(0.65) and ratio["n"] == 2
    assert numbers["supervision"].tolist() == ["pseudo", "full_supervision", "pseudo / full_supervision"]
    assert numbers["miou_mean"].tolist() == pytest.approx([0.35, 0.55, 0.65])
    assert shown["mIoU val %"].tolist()[-1] == report.format_mean_std(0.65, ratio["std"], 2)


# ---- summary.json ------------------------------------------------------------------------------
def test_valid_summary_passes():
    report.validate_summary(valid_summary())


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.pop("mask_ratio"), "summary: expected keys"),
    (lambda s: s.update(extra=1), "summary: expected keys"),
    (lambda s: s["ablations"].pop("no_reg"), "summary.ablations"),
    (lambda s: s["lambda"]["shapes"].pop("0.1"), "summary.lambda.shapes"),
    (lambda s: s["lambda"].update(mnist={}), "summary.lambda"),
    (lambda s: s["mask_ratio"].update({"1": s["mask_ratio"].pop("1.0")}), "summary.mask_ratio"),
    (lambda s: s["main"].pop("sparsity"), "summary.main"),
    (lambda s: s["main"].update(miou=leaf(51.2)), "summary.main.miou.mean"),
    (lambda s: s["main"]["miou"].update(std=-0.1), "summary.main.miou.std"),
    (lambda s: s["baselines"]["cam"]["miou"].update(n=0), "summary.baselines.cam.miou.n"),
    (lambda s: s["segmentation"]["pseudo"].update(miou={"mean": 0.5}), "summary.segmentation.pseudo.miou"),
    (lambda s: s.update(seeds=[]), "summary.seeds"),
    (lambda s: s.update(preset=3), "summary.preset"),
])
def test_invalid_summaries_name_the_entry(mutate, message):
    summary = copy.deepcopy(valid_summary())
    mutate(summary)
    with pytest.raises(report.SummaryError, match=message.replace(".", r"\.").replace("[", r"\[")):
        report.validate_summary(summary)


def result_rows(labels, *, key: str = "label", seeds=(0, 1), **columns) -> pd.DataFrame:
    """One row per (label, seed), as run tables hold them: metric = 0.1 * (position of label + 1) + 0.01 * seed."""
    return pd.DataFrame([{key: label, "seed": seed, "dataset": "shapes", "miou": 0.1 * (i + 1) + 0.01 * seed,
                          "pixel_acc": 0.5, "classifier_acc": 0.9, "sparsity": None, **columns}
                         for i, label in enumerate(labels) for seed in seeds])


def test_summary_blocks_of_the_notebooks_make_a_valid_summary():
    pseudo = result_rows(["mctformer", "full", "cam"])
    lambdas = pd.concat([result_rows(["0.1", "0", "0.01", "0.001"]),
                         result_rows(["0", "0.001", "0.01", "0.1"]).assign(dataset="regions")])
    ablations = result_rows(reversed(report.ABLATIONS))
    ratios = result_rows(report.MASK_RATIO_KEYS)
    segmentation = result_rows(["full_supervision", "pseudo"], key="supervision")
    summary = {"preset": "smoke", "seeds": [0, 1], "main": report.main_block(pseudo),
               "ablations": report.ablation_blocks(ablations), "baselines": report.baseline_blocks(pseudo),
               "lambda": report.lambda_blocks(lambdas), "mask_ratio": report.mask_ratio_blocks(ratios),
               "segmentation": report.segmentation_blocks(segmentation)}
    report.validate_summary(summary)
    assert list(summary) == ["preset", "seeds", *report.SUMMARY_SOURCES]
    assert summary["main"]["miou"] == pytest.approx({"mean": 0.205, "std": 0.01 / math.sqrt(2), "n": 2})
    assert summary["main"]["sparsity"] is None
    assert list(summary["baselines"]) == ["cam", "mctformer"]
    assert summary["baselines"]["cam"]["miou"]["mean"] == pytest.approx(0.305)
    assert list(summary["ablations"]) == list(report.ABLATIONS)  # the schema's order, not the rows'
    assert summary["ablations"]["full"]["miou"]["mean"] == pytest.approx(0.505)
    assert list(summary["lambda"]) == ["shapes", "regions"]
    assert list(summary["lambda"]["shapes"]) == ["0", "0.001", "0.01", "0.1"]
    assert list(summary["segmentation"]) == ["pseudo", "full_supervision"]
    with pytest.raises(report.SummaryError, match="no rows with label"):
        report.mask_ratio_blocks(ratios[ratios["label"] != "0.75"])


def write_notebook_metrics(results_dir, summary):
    report.write_notebook_metrics(results_dir, "03_pseudo_masks", {"main": summary["main"], "baselines": summary["baselines"]})
    report.write_notebook_metrics(results_dir, "04_lambda_sensitivity", {"lambda": summary["lambda"]})
    report.write_notebook_metrics(results_dir, "05_ablations", {"ablations": summary["ablations"],
                                                               "mask_ratio": summary["mask_ratio"]})
    report.write_notebook_metrics(results_dir, "07_segmentation", {"segmentation": summary["segmentation"]})


def test_write_summary_merges_the_notebooks_metrics(tmp_path):
    expected = valid_summary()
    expected["main"]["miou"] = leaf(0.42, 0.01, 3)
    write_notebook_metrics(tmp_path, expected)
    summary = report.write_summary(tmp_path, preset="quick", seeds=[0])
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    assert list(on_disk) == ["preset", "seeds", "main", "ablations", "baselines", "lambda", "mask_ratio", "segmentation"]
    assert on_disk["main"]["miou"] == {"mean": 0.42, "std": 0.01, "n": 3}
    assert on_disk["baselines"]["cam"]["sparsity"] is None


def test_build_summary_names_a_missing_notebook(tmp_path):
    summary = valid_summary()
    write_notebook_metrics(tmp_path, summary)
    (tmp_path / "notebooks" / "05_ablations" / "metrics.json").unlink()
    with pytest.raises(report.SummaryError, match="05_ablations"):
        report.build_summary(tmp_path, preset="quick", seeds=[0])
    write_json(tmp_path / "notebooks" / "05_ablations" / "metrics.json", {"notebook": "05_ablations", "ablations": {}})
    with pytest.raises(report.SummaryError, match="mask_ratio"):
        report.build_summary(tmp_path, preset="quick", seeds=[0])


def test_write_notebook_metrics_rejects_unknown_notebook(tmp_path):
    with pytest.raises(ValueError, match="09_nope"):
        report.write_notebook_metrics(tmp_path, "09_nope", {})


# ---- files and README --------------------------------------------------------------------------
def test_save_table_figure_and_readme(tmp_path):
    numbers = pd.DataFrame({"method": ["full"], "miou_mean": [0.5]})
    shown = pd.DataFrame({"method": ["full"], "mIoU val %": ["50.0"]})
    report.save_table(numbers, tmp_path, "main_comparison", caption="ours vs baselines", notebook="03_pseudo_masks",
                      display=shown)
    report.save_table(report.paper_table8(), tmp_path, "lambda_table8", caption="Table 8 layout",
                      notebook="04_lambda_sensitivity")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    report.save_figure(fig, tmp_path, "threshold_curve", caption="the t-curve", notebook="03_pseudo_masks")
    plt.close(fig)
    assert pd.read_csv(tmp_path / "tables" / "main_comparison.csv")["miou_mean"].tolist() == [0.5]
    assert "| full | 50.0 |" in (tmp_path / "tables" / "main_comparison.md").read_text()
    assert (tmp_path / "figures" / "threshold_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    write_notebook_metrics(tmp_path, valid_summary())
    report.write_summary(tmp_path, preset="full", seeds=[0, 1, 2])

    readme = report.write_readme(tmp_path, preset="full", seeds=[0, 1, 2], seconds=600).read_text()
    assert "preset: **full**" in readme and "0, 1, 2" in readme
    assert "SYNTHETIC" in readme
    assert "10.0 min" in readme
    for caption in ("ours vs baselines", "Table 8 layout", "the t-curve"):
        assert caption in readme
    assert "![threshold_curve](figures/threshold_curve.png)" in readme
    assert "| full | 50.0 |" in readme                       # tables are shown inline
    assert "| paper (ViT-B, real data) | DFC2020 | mIoU % | 59.8 |" in readme
    assert readme.index("## 03_pseudo_masks") < readme.index("## 04_lambda_sensitivity")
    assert "| ours (full) | 50.0 | 80.0 | 90.0 | 60.0 |" in readme   # headline numbers from summary.json


def test_save_table_rejects_path_like_names(tmp_path):
    with pytest.raises(ValueError, match="name"):
        report.save_table(pd.DataFrame(), tmp_path, "../x", caption="")


def test_readme_without_synthetic_data_does_not_claim_it(tmp_path):
    readme = report.write_readme(tmp_path, preset="paper", seeds=[0], datasets=["voc"]).read_text()
    assert "SYNTHETIC" not in readme
    assert "preset: **paper**" in readme


def test_reproduce_clean_keeps_the_browser_screenshot_and_benchmarks(tmp_path):
    from kyam_lib.experiments.reproduce import _clean

    (tmp_path / "figures").mkdir()
    (tmp_path / "tables").mkdir()
    for name in ("figures/attention_browser.png", "figures/old.png", "tables/t.csv", "summary.json",
                 "benchmarks.json", "benchmarks.md"):
        (tmp_path / name).write_text("x")
    _clean(tmp_path)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["benchmarks.json", "benchmarks.md", "figures/attention_browser.png"]
