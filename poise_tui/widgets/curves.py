"""Training curves of one or more candidates, one metric at a time (textual-plotext)."""

from __future__ import annotations

import math

from textual_plotext import PlotextPlot

from poise_tui.rundata import CURVE_METRICS, Curve

MAX_STEP_TICKS = 6


def step_ticks(first: int, last: int, most: int = MAX_STEP_TICKS) -> list[int]:
    """At most `most` integer ticks from first to last, on a round stride (1, 2, 5, 10, 20, 50…):
    plotext's own ticks split the range evenly, so steps read as 25.5."""
    span = max(0, last - first)
    rough = max(1.0, span / max(1, most - 1))
    magnitude = 10 ** math.floor(math.log10(rough))
    stride = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= rough)
    start = math.ceil(first / stride) * stride
    return list(range(int(start), last + 1, int(stride))) or [first]


class CurvesView(PlotextPlot):
    """Overlays several labelled curves; `metric_index` picks the metric from CURVE_METRICS."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.curves: dict[str, Curve] = {}
        self.metric_index = 0

    @property
    def metric(self) -> tuple[str, str]:
        return CURVE_METRICS[self.metric_index]

    def show(self, curves: dict[str, Curve]) -> None:
        self.curves = curves
        self._draw()

    def cycle(self, step: int) -> str:
        """Move to the next (+1) or previous (-1) metric; returns its label."""
        self.metric_index = (self.metric_index + step) % len(CURVE_METRICS)
        self._draw()
        return self.metric[1]

    def _draw(self) -> None:
        key, label = self.metric
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(f"{label}  ([ ] to switch)")
        plt.xlabel("step")
        drawn, steps_seen = 0, []
        for name, curve in self.curves.items():
            steps, values = curve.get(key, ([], []))
            if steps:
                # Downsample long curves to the plot's width: plotext cost grows with points, not pixels.
                stride = max(1, len(steps) // max(self.size.width, 40))
                plt.plot(steps[::stride], values[::stride], label=name, marker="braille")
                drawn += 1
                steps_seen += [steps[0], steps[-1]]
        if steps_seen:
            plt.xticks(step_ticks(min(steps_seen), max(steps_seen)))
        if not drawn:
            plt.title(f"{label}: not logged (yet) by these candidates")
        self.refresh()
