"""Figures that carry a claim: the learning curves show the chance line and the gated runs' sparsity."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from kyam_lib.experiments import plots  # noqa: E402


def test_learning_curves_draw_chance_and_only_gated_sparsity_in_matching_colours():
    log = pd.DataFrame({"epoch": [1, 2, 1, 2], "seed": 0, "label": ["gated", "gated", "plain", "plain"],
                        "val_classifier_acc": [0.7, 0.8, 0.72, 0.9], "val_chance_acc": 0.71,
                        "sparsity": [0.0, 0.5, 0.0, 0.0], "gates_held_open": [True, False, True, False],
                        "gated": [True, True, False, False]})
    fig = plots.learning_curves(log)
    accuracy, sparsity = fig.axes
    chance = [line for line in accuracy.lines if list(line.get_ydata()) == [0.71, 0.71]]
    assert len(chance) == 1
    runs = {to_hex(line.get_color()) for line in accuracy.lines if len(line.get_xdata()) == 2 and line not in chance}
    gated = [line for line in sparsity.lines if len(line.get_xdata()) == 2]
    assert len(gated) == 1 and list(gated[0].get_ydata()) == [0.0, 0.5]
    assert to_hex(gated[0].get_color()) in runs and len(runs) == 2
    plots.plt.close(fig)
