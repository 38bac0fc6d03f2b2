"""The numbered notebooks: stored output-free with a parameters cell, and executed end to end with smoke=True.

The execution tests run `kyam_lib.experiments.reproduce` (papermill, one kernel per notebook) on tiny SYNTHETIC
datasets in a temporary data root, writing runs and results into temporary folders.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
from pathlib import Path

import nbformat
import pytest

from kyam_lib.experiments import report
from kyam_lib.config import TrainConfig
from kyam_lib.crf import crf_available
from kyam_lib.experiments.notebook_params import NotebookParameterError, check_parameters, notebook_parameters

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NUMBERED = [NOTEBOOK_DIR / f"{name}.ipynb" for name in report.NOTEBOOKS]
# Names a parameters cell may define besides TrainConfig fields.
EXTRA_PARAMETERS = {"preset", "smoke", "seeds", "results_dir", "runs_dir", "variant", "split", "train_compared"}


def all_notebooks() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def code_cells(notebook) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


# ---- stored notebooks --------------------------------------------------------------------------
def test_numbered_notebooks_exist():
    assert all(path.is_file() for path in NUMBERED), [p.name for p in NUMBERED if not p.is_file()]


@pytest.mark.parametrize("path", all_notebooks(), ids=lambda p: p.stem)
def test_notebook_has_a_parameters_cell_and_no_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.nbformat == 4
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    tagged = [cell for cell in code_cells(notebook) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected one code cell tagged 'parameters', found {len(tagged)}"
    for cell in code_cells(notebook):
        assert cell.outputs == [], f"{path.name}: stored with outputs"
        assert cell.execution_count is None, f"{path.name}: stored with execution counts"


@pytest.mark.parametrize("path", NUMBERED, ids=lambda p: p.stem)
def test_numbered_notebook_is_thin_and_says_the_data_is_synthetic(path):
    notebook = nbformat.read(path, as_version=4)
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith(f"# {path.stem[:2]}")
    assert "SYNTHETIC" in notebook.cells[0].source
    for cell in code_cells(notebook):
        tree = ast.parse(cell.source)
        defined = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda))]
        assert not defined, f"{path.name}: a function or class is defined in a notebook cell"
        if "parameters" not in cell.metadata.get("tags", []):  # the parameters cell is a flat list of fields
            assert len(cell.source.splitlines()) <= 12, f"{path.name}: a code cell longer than 12 lines"
    assert "write_metrics" in code_cells(notebook)[-1].source, f"{path.name}: the last cell must write metrics.json"


@pytest.mark.parametrize("path", NUMBERED, ids=lambda p: p.stem)
def test_parameters_are_config_fields_papermill_can_read(path):
    names = set(notebook_parameters(path))  # raises if papermill misses a name the cell assigns
    assert {"preset", "smoke", "seeds", "results_dir", "runs_dir", "dataset", "data_root"} <= names
    assert names <= set(TrainConfig.field_names()) | EXTRA_PARAMETERS, names - set(TrainConfig.field_names())


def write_notebook(path: Path, parameters_source: str | None) -> Path:
    cells = [nbformat.v4.new_markdown_cell("# test")]
    if parameters_source is not None:
        cell = nbformat.v4.new_code_cell(parameters_source)
        cell.metadata["tags"] = ["parameters"]
        cells.append(cell)
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
    return path


def test_check_parameters_names_the_notebook_and_the_unknown_parameter(tmp_path):
    path = write_notebook(tmp_path / "nb.ipynb", 'preset = "quick"\nl0_weight = 0.01\n')
    check_parameters(path, {"preset": "full", "l0_weight": 0.1})
    with pytest.raises(NotebookParameterError, match=r"nb\.ipynb.*\['l0_wieght'\]"):
        check_parameters(path, {"preset": "full", "l0_wieght": 0.1})
    with pytest.raises(NotebookParameterError, match=r"\['lr', 'seed'\]"):
        check_parameters(NUMBERED[2], {"lr": 1.0, "seed": 3})


def test_a_parameter_papermill_cannot_read_is_an_error(tmp_path):
    path = write_notebook(tmp_path / "nb.ipynb", 'data_root = ""  # "" = $KYAM_DATA_ROOT\nepochs = 3\n')
    with pytest.raises(NotebookParameterError, match=r"\['data_root'\]"):
        notebook_parameters(path)


def test_a_notebook_without_parameters_cell_is_an_error(tmp_path):
    path = write_notebook(tmp_path / "nb.ipynb", None)
    with pytest.raises(NotebookParameterError, match=r"nb\.ipynb: expected exactly one code cell tagged 'parameters'"):
        check_parameters(path, {})


# ---- execution with smoke=True -----------------------------------------------------------------
EXPECTED = {
    "01_data_prep": (["data_summary", "class_frequency"],
                     ["samples_shapes", "samples_regions", "class_frequency", "cooccurrence_shapes",
                      "cooccurrence_regions"]),
    "02_training": (["training"], ["training_curves"]),
    # crf_comparison needs the crf extra (which `make test` installs)
    "03_pseudo_masks": (["main_comparison", "paper_voc_pseudo_masks", "per_class_iou"]
                        + (["crf_comparison"] if crf_available() else []),
                        ["threshold_curve", "per_class_iou"]),
    "04_lambda_sensitivity": (["lambda_sensitivity", "lambda_table8"],
                              ["lambda_sensitivity", "gate_maps_shapes", "gate_maps_regions"]),
    "05_ablations": (["ablations", "mask_ratio"], ["mask_ratio"]),
    "06_qualitative": ([], ["qualitative", "attention_maps_ours", "attention_maps_mctformer"]),
    "07_segmentation": (["segmentation", "paper_segmentation"], ["segmentation"]),
}


def _digest(paths: list[Path]) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    """One `reproduce --smoke` over tiny generated datasets; returns (results_dir, runs_dir, timing)."""
    from kyam_lib.data import generate_regions, generate_shapes
    from kyam_lib.experiments.reproduce import run

    root = tmp_path_factory.mktemp("kyam_notebooks")
    generate_shapes(root / "data" / "shapes", num_train=64, num_val=32)
    generate_regions(root / "data" / "regions", num_train=64, num_val=32)
    before = _digest(NUMBERED)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KYAM_DATA_ROOT", str(root / "data"))
        patch.setenv("OMP_NUM_THREADS", "1")
        timing = run(preset="quick", smoke=True, results_dir=root / "results", runs_dir=root / "runs",
                     log_output=False)
    assert _digest(NUMBERED) == before, "executing must not write into notebooks/"
    return root / "results", root / "runs", timing


@pytest.mark.slow
@pytest.mark.parametrize("notebook", list(EXPECTED))
def test_smoke_notebook_outputs(smoke_results, notebook):
    results, _, timing = smoke_results
    metrics = json.loads((results / "notebooks" / notebook / "metrics.json").read_text())
    assert metrics["notebook"] == notebook and metrics["preset"] == "smoke" and metrics["smoke"] is True
    assert metrics["seeds"] == [0]
    executed = nbformat.read(results / "notebooks" / f"{notebook}.ipynb", as_version=4)
    assert any(cell.outputs for cell in code_cells(executed)), "the executed copy keeps its outputs"
    catalog = json.loads((results / "catalog.json").read_text())
    tables, figures = EXPECTED[notebook]
    for name in tables:
        assert (results / "tables" / f"{name}.csv").stat().st_size > 0
        assert (results / "tables" / f"{name}.md").read_text().startswith("|")
        assert catalog["tables"][name]["notebook"] == notebook and catalog["tables"][name]["caption"]
    for name in figures:
        assert (results / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert catalog["figures"][name]["notebook"] == notebook
    assert timing["notebooks"][notebook] > 0


@pytest.mark.slow
def test_smoke_notebook_metrics_content(smoke_results):
    results = smoke_results[0]

    def read(name):
        return json.loads((results / "notebooks" / name / "metrics.json").read_text())

    data = read("01_data_prep")["datasets"]
    assert data["shapes"]["train"]["images_in_split"] == 64 and data["regions"]["val"]["images_in_split"] == 32
    assert data["shapes"]["train"]["images"] == 32  # smoke counts a subset
    training = read("02_training")
    assert all((Path(NOTEBOOK_DIR / run) / "model").is_dir() for run in training["runs"])
    assert 0.0 <= training["sparsity"]["mean"] <= 1.0
    assert read("03_pseudo_masks")["baselines"]["cam"]["sparsity"] is None
    assert list(read("04_lambda_sensitivity")["lambda"]) == ["shapes", "regions"]
    assert len(read("06_qualitative")["ids"]) == 3
    segmentation = read("07_segmentation")["segmentation"]
    assert segmentation["pseudo"]["classifier_acc"] is None and 0 <= segmentation["pseudo"]["miou"]["mean"] <= 1


@pytest.mark.slow
def test_smoke_summary_report_and_timing(smoke_results):
    results, _, timing = smoke_results
    summary = json.loads((results / "summary.json").read_text())
    report.validate_summary(summary)
    assert summary["preset"] == "smoke" and summary["seeds"] == [0]
    # the lambda = 0.01 run, the mask-rate 0.5 run and "full" are one run: identical numbers
    assert summary["lambda"]["shapes"]["0.01"] == summary["main"] == summary["mask_ratio"]["0.5"]
    assert summary["ablations"]["no_masking"] == summary["mask_ratio"]["0"]
    assert summary["ablations"]["no_pruning"] == summary["lambda"]["shapes"]["0"]
    assert summary["lambda"]["shapes"]["0"]["sparsity"]["mean"] == 0.0
    on_disk = json.loads((results / "reproduce_timing.json").read_text())
    assert on_disk["preset"] == "smoke" and on_disk["seeds"] == [0] and on_disk["seconds"] == timing["seconds"] > 0
    readme = (results / "README.md").read_text()
    assert "SYNTHETIC" in readme and "preset: **smoke**" in readme and report.PAPER_LABEL in readme
    catalog = json.loads((results / "catalog.json").read_text())
    for kind in ("tables", "figures"):
        for entry in catalog[kind].values():
            assert entry["caption"] in readme


@pytest.mark.slow
def test_smoke_runs_are_shared_between_notebooks(smoke_results):
    _, runs, _ = smoke_results
    shapes = sorted(p.name for p in (runs / "smoke" / "shapes").iterdir())
    assert shapes == sorted([
        "full_seed0", "no_masking_seed0", "no_reg_seed0", "no_pruning_seed0", "no_masking_no_pruning_seed0",
        "cam_seed0", "mctformer_seed0",
        "full_l0_weight-0.001_seed0", "full_l0_weight-0.1_seed0", "full_mask_rate-0.25_seed0",
        "full_mask_rate-0.75_seed0", "full_mask_rate-1.0_seed0", "seg_pseudo_seed0", "seg_full_supervision_seed0"])
    regions = sorted(p.name for p in (runs / "smoke" / "regions").iterdir())
    assert regions == sorted(["no_pruning_seed0", "full_l0_weight-0.001_seed0", "full_seed0", "full_l0_weight-0.1_seed0"])


def test_reproduce_refuses_an_unknown_parameter_before_running(tmp_path, monkeypatch):
    from kyam_lib.experiments import reproduce

    broken = tmp_path / "notebooks"
    broken.mkdir()
    for path in NUMBERED:
        (broken / path.name).write_bytes(path.read_bytes())
    write_notebook(broken / "05_ablations.ipynb", 'preset = "quick"\n')  # lacks the other parameters
    with pytest.raises(NotebookParameterError, match=r"05_ablations\.ipynb.*unknown parameter"):
        reproduce.run(preset="quick", smoke=True, results_dir=tmp_path / "results", runs_dir=tmp_path / "runs",
                      notebooks_dir=broken)
    assert not (tmp_path / "results" / "notebooks").exists(), "nothing runs when a notebook's parameters do not fit"
    assert os.listdir(tmp_path) == ["notebooks"]
