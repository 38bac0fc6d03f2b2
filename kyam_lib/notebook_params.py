"""Check papermill parameters against a notebook's `parameters` cell before executing it.

papermill injects any name it is given, so a misspelt parameter (`l0_wieght=0.1`) would run the
whole notebook with the default. `check_parameters` turns that into one clear error instead.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import nbformat

__all__ = ["NotebookParameterError", "parameters_cell", "notebook_parameters", "check_parameters"]


class NotebookParameterError(ValueError):
    """A notebook has no `parameters` cell, or was given a name its cell does not define."""


def parameters_cell(notebook: nbformat.NotebookNode, *, source: str = "notebook") -> nbformat.NotebookNode:
    """The code cell tagged `parameters`; raises if there is none or more than one."""
    cells = [cell for cell in notebook.cells
             if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise NotebookParameterError(f"{source}: expected exactly one code cell tagged 'parameters', found {len(cells)}")
    return cells[0]


def notebook_parameters(path: str | os.PathLike) -> dict[str, Any]:
    """Names and defaults of a notebook's `parameters` cell ({name: default source text})."""
    import papermill  # imported here: importing papermill is slow and only the driver needs it

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: notebook not found")
    parameters_cell(nbformat.read(path, as_version=4), source=str(path))
    return {name: info["default"] for name, info in papermill.inspect_notebook(str(path)).items()}


def check_parameters(path: str | os.PathLike, parameters: Mapping[str, Any]) -> None:
    """Raise NotebookParameterError naming the notebook and every parameter its cell does not define."""
    known = notebook_parameters(path)
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise NotebookParameterError(
            f"{path}: unknown parameter(s) {unknown}; its parameters cell defines {sorted(known)}")
