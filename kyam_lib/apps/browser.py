"""The attention-map browser app (notebook 08, `make browse`): ipywidgets over `browser_logic.AttentionBrowser`.

`build_browser(run_dir)` wires ipywidgets to it: run/checkpoint and split pickers, an image
slider and id box, the class list (probability, ✓ predicted, ● in the ground truth), opacity,
block range, head weighting, and a clickable blocks × heads gate map where pruned heads are
marked and a click shows that head's own map. Panels are PNG bytes in `ipywidgets.Image`.
Widgets carry stable CSS classes (``kyam-map``, ``kyam-class``, ``kyam-gate-b{b}-h{h}``, ...)
so that a browser test can find them.
"""
from __future__ import annotations

import contextlib
import html
import os
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..experiments.runs import run_variant
from .browser_logic import (AttentionBrowser, DEFAULT_BACKGROUND_SCORE, HeadWeighting, _run_dir_of, find_checkpoints, png_bytes, resolve_checkpoint, resolve_path)

__all__ = ["GateGrid", "BrowserApp", "build_browser"]

_OPEN_COLOUR = "#66bb6a"
_CLOSED_COLOUR = "#d6d6d6"
_CHOSEN_BORDER = "3px solid #1565c0"
_PLAIN_BORDER = "3px solid transparent"


class GateGrid:
    """The blocks × heads gate map as a grid of buttons; pruned heads show ✕ on grey.

    Buttons of heads that enter the current map get a blue border. `on_pick(block, head)` is
    called when a head is clicked.
    """

    def __init__(self, num_blocks: int, num_heads: int, on_pick) -> None:
        import ipywidgets as widgets

        self.num_blocks, self.num_heads = num_blocks, num_heads
        self.buttons: list[list[Any]] = []
        cells: list[Any] = [widgets.HTML("")]
        cells += [widgets.HTML(f"<center><small>h{h}</small></center>") for h in range(num_heads)]
        for block in range(num_blocks):
            cells.append(widgets.HTML(f"<small>block {block}</small>"))
            row = []
            for head in range(num_heads):
                button = widgets.Button(layout=widgets.Layout(width="34px", height="26px", padding="0"))
                button.add_class("kyam-gate")
                button.add_class(f"kyam-gate-b{block}-h{head}")
                button.on_click(lambda _, b=block, h=head: on_pick(b, h))
                row.append(button)
                cells.append(button)
            self.buttons.append(row)
        self.widget = widgets.GridBox(cells, layout=widgets.Layout(
            grid_template_columns=f"64px repeat({num_heads}, 36px)", grid_gap="2px", align_items="center"))
        self.widget.add_class("kyam-gates")

    def update(self, gates: np.ndarray, chosen: np.ndarray) -> None:
        """gates (L, H) in [0, 1]; chosen (L, H) bool: the heads in the current map."""
        if gates.shape != (self.num_blocks, self.num_heads) or chosen.shape != gates.shape:
            raise ValueError(f"gates/chosen: expected shape {(self.num_blocks, self.num_heads)}, "
                             f"got {gates.shape} and {chosen.shape}")
        for block, row in enumerate(self.buttons):
            for head, button in enumerate(row):
                is_open = bool(gates[block, head] > 0)
                button.description = "" if is_open else "✕"
                button.style.button_color = _OPEN_COLOUR if is_open else _CLOSED_COLOUR
                button.layout.border = _CHOSEN_BORDER if chosen[block, head] else _PLAIN_BORDER
                state = "open" if is_open else "pruned"
                button.tooltip = (f"block {block}, head {head}: {state} (gate {gates[block, head]:.2f}); "
                                  "click to show this head's own map")
                for name, flag in (("kyam-gate-open", is_open), ("kyam-gate-closed", not is_open),
                                   ("kyam-gate-chosen", bool(chosen[block, head]))):
                    if flag and name not in button._dom_classes:
                        button.add_class(name)
                    elif not flag and name in button._dom_classes:
                        button.remove_class(name)


class BrowserApp:
    """The widgets of the browser and their wiring to an `AttentionBrowser`.

    `widget` is the whole app. Every change re-renders from the cache; errors are shown in the
    status line (class ``kyam-error``) instead of vanishing in the kernel log.
    """

    def __init__(self, run_dir: str | os.PathLike, *, split: str = "val", runs_dir: str | os.PathLike | None = None,
                 data_root: str | os.PathLike | None = None, display_size: int = 256) -> None:
        import ipywidgets as widgets

        self._widgets = widgets
        self.data_root = data_root
        self.display_size = display_size
        self.browser: AttentionBrowser | None = None
        self.last_render_seconds = 0.0
        self._busy = False
        self._shown: int | None = None  # index whose image and ground truth are on screen
        checkpoint = resolve_checkpoint(run_dir).resolve()
        root = resolve_path(runs_dir).resolve() if runs_dir is not None else _run_dir_of(checkpoint).parent
        options = [(self._label(path, root), str(path)) for path in find_checkpoints(root)]
        if str(checkpoint) not in [value for _, value in options]:
            options.insert(0, (self._label(checkpoint, root), str(checkpoint)))

        layout = widgets.Layout
        self.title = widgets.HTML()
        self.run = widgets.Dropdown(options=options, value=str(checkpoint), description="run",
                                    layout=layout(width="520px"))
        self.split = widgets.Dropdown(options=[("val", "val"), ("train", "train")], description="split",
                                      layout=layout(width="180px"))
        if split not in ("train", "val"):
            self.split.options = [*self.split.options, (split, split)]
        self.split.value = split
        self.index = widgets.IntSlider(value=0, min=0, max=0, description="image", continuous_update=False,
                                       layout=layout(width="420px"))
        self.image_id = widgets.Text(description="id", continuous_update=False, layout=layout(width="240px"),
                                     placeholder="image id, Enter")
        self.classes = widgets.Select(options=[], description="class", rows=6,
                                      layout=layout(width="360px"))
        self.class_help = widgets.HTML("<small>✓ predicted (drawn in the pseudo-mask) · ● in the ground truth · "
                                       "number = predicted probability</small>")
        self.opacity = widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="opacity",
                                           continuous_update=False)
        self.blocks = widgets.IntRangeSlider(value=(0, 0), min=0, max=0, description="blocks",
                                             continuous_update=False)
        self.weighting = widgets.ToggleButtons(options=[("gate-weighted", "gates"), ("all heads", "mean"),
                                                        ("one head", "head")], value="gates",
                                               description="heads", style={"button_width": "120px"})
        self.head = widgets.Dropdown(options=[("head 0", 0)], description="head", disabled=True,
                                     layout=layout(width="180px"))
        self.background_score = widgets.FloatSlider(value=DEFAULT_BACKGROUND_SCORE, min=0.0, max=1.0, step=0.05,
                                                    description="bg score", continuous_update=False)
        self.gate_box = widgets.VBox()
        self.gate_help = widgets.HTML("<small>gate map: green = open, grey ✕ = pruned head, blue border = "
                                      "heads in the current map; click a head to see its own map</small>")
        self.gate_grid: GateGrid | None = None
        self.image_panel = self._panel("image", "kyam-image")
        self.truth_panel = self._panel("ground truth", "kyam-truth")
        self.pseudo_panel = self._panel("pseudo-mask", "kyam-pseudo")
        self.map_panel = self._panel("class map", "kyam-map")
        self.legend = widgets.HTML()
        self.status = widgets.HTML()
        for control, name in ((self.run, "kyam-run"), (self.split, "kyam-split"), (self.index, "kyam-index"),
                              (self.image_id, "kyam-id"), (self.classes, "kyam-class"),
                              (self.opacity, "kyam-opacity"), (self.blocks, "kyam-blocks"),
                              (self.weighting, "kyam-weighting"), (self.head, "kyam-head"),
                              (self.background_score, "kyam-background"), (self.status, "kyam-status"),
                              (self.legend, "kyam-legend"), (self.title, "kyam-title")):
            control.add_class(name)

        controls = widgets.VBox([self.classes, self.class_help, self.opacity, self.blocks, self.weighting,
                                 self.head, self.background_score])
        panels = widgets.HBox([box for box, _ in (self.image_panel, self.truth_panel, self.pseudo_panel,
                                                   self.map_panel)])
        self.widget = widgets.VBox([
            self.title,
            widgets.HBox([self.run, self.split]),
            widgets.HBox([self.index, self.image_id]),
            widgets.HBox([controls, widgets.VBox([self.gate_box, self.gate_help])],
                         layout=layout(grid_gap="24px")),
            panels,
            self.legend,
            self.status,
        ])
        self.widget.add_class("kyam-browser")

        self.run.observe(lambda change: self._guarded(self._load), names="value")
        self.split.observe(lambda change: self._guarded(self._load), names="value")
        self.index.observe(lambda change: self._guarded(self._image_changed), names="value")
        self.image_id.observe(lambda change: self._guarded(self._id_entered), names="value")
        self.weighting.observe(lambda change: self._guarded(self._weighting_changed), names="value")
        for control in (self.classes, self.opacity, self.blocks, self.head, self.background_score):
            control.observe(lambda change: self._guarded(self._render), names="value")
        self._guarded(self._load)

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def _label(path: Path, root: Path) -> str:
        try:
            return str(path.relative_to(root))
        except ValueError:
            return str(path)

    def _panel(self, caption: str, dom_class: str) -> tuple[Any, Any]:
        widgets = self._widgets
        image = widgets.Image(format="png", layout=widgets.Layout(width=f"{self.display_size}px"))
        image.add_class(dom_class)
        box = widgets.VBox([widgets.HTML(f"<b>{caption}</b>"), image])
        return box, image

    @contextlib.contextmanager
    def _hold(self) -> Iterator[None]:
        """Set several controls without a render per change."""
        busy, self._busy = self._busy, True
        try:
            yield
        finally:
            self._busy = busy

    def _guarded(self, action) -> None:
        if self._busy:
            return
        try:
            with self._hold():
                action()
        except Exception as err:  # the UI boundary: show the error where the user looks
            text = html.escape("".join(traceback.format_exception_only(type(err), err)).strip())
            details = html.escape(traceback.format_exc())
            self.status.value = (f'<span style="color:#b71c1c">⚠ {text}</span>'
                                 f"<details><summary>details</summary><pre>{details}</pre></details>")
            self.status.add_class("kyam-error")
        else:
            self.status.remove_class("kyam-error")

    # -- actions --------------------------------------------------------------------------
    def _load(self) -> None:
        """(Re)load the chosen checkpoint and split; reset the controls that depend on them."""
        browser = AttentionBrowser.from_run(self.run.value, split=self.split.value, data_root=self.data_root,
                                            display_size=self.display_size)
        self.browser = browser
        self._shown = None
        L, H = browser.num_blocks, browser.num_heads
        self.index.max = len(browser) - 1
        self.index.value = min(self.index.value, len(browser) - 1)
        self.blocks.max = L - 1
        self.blocks.value = (0, L - 1)
        self.head.options = [(f"head {h}", h) for h in range(H)]
        self.background_score.value = browser.background_score
        self.background_score.layout.display = None if browser.has_background else "none"
        for control in (self.blocks, self.weighting, self.head):
            control.disabled = not browser.uses_attention
        self.head.disabled = not browser.uses_attention or self.weighting.value != "head"
        self.gate_grid = GateGrid(L, H, self._pick_head)
        self.gate_box.children = [self.gate_grid.widget]
        self.classes.rows = min(len(browser.class_names), 10)
        config = browser.model.config
        gates = browser.head_gates(self.index.value)
        pruned = int((gates <= 0).sum()) if config.use_head_gates else 0
        self.title.value = (f"<h3 style='margin:4px 0'>Attention maps · {html.escape(self.run.label)}</h3>"
                            f"<small title='{html.escape(browser.name)}'>dataset {html.escape(browser.dataset_name)} · "
                            f"split {html.escape(browser.split)} "
                            f"({len(browser)} images) · {L} blocks × {H} heads, {pruned} pruned · "
                            f"classifier {config.classifier}</small>")
        self._image_changed()

    def _image_changed(self) -> None:
        browser = self._require()
        index = self.index.value
        entry = browser.cached(index)
        self.image_id.value = entry.image_id
        current = self.classes.value if isinstance(self.classes.value, int) else None
        rows = browser.class_rows(index)
        self.classes.options = [(row.label, row.index) for row in rows]
        if current is None or current >= len(rows):
            current = max(rows, key=lambda row: row.prob).index
        self.classes.value = current
        self._render()

    def _id_entered(self) -> None:
        browser = self._require()
        wanted = self.image_id.value.strip()
        if not wanted or wanted == browser.cached(self.index.value).image_id:
            return
        self.index.value = browser.index_of(wanted)
        self._image_changed()

    def _weighting_changed(self) -> None:
        self.head.disabled = self.weighting.value != "head" or not self._require().uses_attention
        self._render()

    def _pick_head(self, block: int, head: int) -> None:
        def pick() -> None:
            self.blocks.value = (block, block)
            self.weighting.value = "head"
            self.head.value = head
            self.head.disabled = False
            self._render()
        self._guarded(pick)

    def head_weighting(self) -> HeadWeighting:
        return int(self.head.value) if self.weighting.value == "head" else self.weighting.value

    def _require(self) -> AttentionBrowser:
        if self.browser is None:
            raise RuntimeError("no run loaded")
        return self.browser

    def _render(self) -> None:
        browser = self._require()
        started = time.perf_counter()
        index, weighting = self.index.value, self.head_weighting()
        block_range = tuple(self.blocks.value)
        panels = browser.render(index, class_index=int(self.classes.value), block_range=block_range,
                                head_weighting=weighting, opacity=float(self.opacity.value),
                                background_score=float(self.background_score.value))
        if self._shown != index:  # the image and its ground truth change only with the image
            self.image_panel[1].value = png_bytes(panels.image)
            self.truth_panel[1].value = png_bytes(panels.ground_truth)
            self._shown = index
        self.pseudo_panel[1].value = png_bytes(panels.pseudo_mask)
        self.map_panel[1].value = png_bytes(panels.class_map)
        assert self.gate_grid is not None
        self.gate_grid.update(browser.head_gates(index),
                              browser.contributing_heads(index, block_range=block_range, head_weighting=weighting))
        self.legend.value = browser.legend_html(index, panels.pseudo_labels)
        self.last_render_seconds = time.perf_counter() - started
        note = (" · <b>every head of the chosen blocks is pruned: the gate-weighted map is empty</b>"
                if panels.empty_map else "")
        self.status.value = (f"<small>image {index} ({html.escape(browser.ids[index])}) · "
                             f"rendered in {1000 * self.last_render_seconds:.0f} ms{note}</small>")


def build_browser(run_dir: str | os.PathLike, split: str = "val", *, runs_dir: str | os.PathLike | None = None,
                  data_root: str | os.PathLike | None = None, display_size: int = 256, smoke: bool = False):
    """The attention-map browser for a run, as one ipywidgets widget.

    `runs_dir` (default: the folder holding the run) is searched for other checkpoints to pick
    from; `data_root` overrides where the images are read (default: the run's, else
    ``$KYAM_DATA_ROOT``). `smoke=True` opens the "smoke" preset's run of ours on the shapes data
    under `runs_dir` instead of `run_dir` — the run the other notebooks share, trained in
    seconds when it is missing — so the notebook runs on a fresh clone.
    """
    if smoke:
        run_dir = run_variant("smoke", "full", dataset="shapes", data_root=str(data_root or ""),
                              runs_dir=resolve_path(runs_dir if runs_dir is not None else "runs"))
    return BrowserApp(run_dir, split=split, runs_dir=runs_dir, data_root=data_root or None,
                      display_size=display_size).widget
