"""Check papermill parameters against a notebook's `parameters` cell before executing it.

papermill injects any name it is given, so a misspelt parameter (`l0_wieght=0.1`) would run the
whole notebook with the default. `check_parameters` turns that into one clear error instead.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any, Mapping

import nbformat

__all__ = ["NotebookParameterError", "parameters_cell", "assigned_names", "notebook_parameters", "check_parameters"]


class NotebookParameterError(ValueError):
    """A notebook has no `parameters` cell, or was given a name its cell does not define."""


def parameters_cell(notebook: nbformat.NotebookNode, *, source: str = "notebook") -> nbformat.NotebookNode:
    """The code cell tagged `parameters`; raises if there is none or more than one."""
    cells = [cell for cell in notebook.cells
             if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise NotebookParameterError(
            f"{source}: expected exactly one code cell tagged 'parameters', found {len(cells)}")
    return cells[0]


def assigned_names(source: str, *, where: str = "parameters cell") -> list[str]:
    """Names assigned at the top level of a cell's source, in order."""
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise NotebookParameterError(f"{where}: not valid Python ({err})") from err
    names = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AnnAssign, ast.AugAssign)) else []
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return list(dict.fromkeys(names))


def notebook_parameters(path: str | os.PathLike) -> dict[str, Any]:
    """Names and defaults of a notebook's `parameters` cell ({name: default source text}).

    Raises if papermill does not see every name the cell assigns (it skips, for instance, a line
    with a second "=" in its comment), since such a parameter could never be set.
    """
    import papermill  # imported here: importing papermill is slow and only the driver needs it

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: notebook not found")
    cell = parameters_cell(nbformat.read(path, as_version=4), source=str(path))
    found = {name: info["default"] for name, info in papermill.inspect_notebook(str(path)).items()}
    unseen = [name for name in assigned_names(cell.source, where=f"{path}: parameters cell") if name not in found]
    if unseen:
        raise NotebookParameterError(f"{path}: papermill cannot read parameter(s) {unseen} of the parameters cell "
                                     "(one assignment per line, no '=' in the comment)")
    return found


def check_parameters(path: str | os.PathLike, parameters: Mapping[str, Any]) -> None:
    """Raise NotebookParameterError naming the notebook and every parameter its cell does not define."""
    known = notebook_parameters(path)
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise NotebookParameterError(
            f"{path}: unknown parameter(s) {unknown}; its parameters cell defines {sorted(known)}")
