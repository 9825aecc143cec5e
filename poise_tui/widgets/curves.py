"""Training curves of one or more candidates, one metric at a time (textual-plotext)."""

from __future__ import annotations

from textual_plotext import PlotextPlot

from poise_tui.rundata import CURVE_METRICS, Curve


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
        drawn = 0
        for name, curve in self.curves.items():
            steps, values = curve.get(key, ([], []))
            if steps:
                # Downsample long curves to the plot's width: plotext cost grows with points, not pixels.
                stride = max(1, len(steps) // max(self.size.width, 40))
                plt.plot(steps[::stride], values[::stride], label=name, marker="braille")
                drawn += 1
        if not drawn:
            plt.title(f"{label}: not logged (yet) by these candidates")
        self.refresh()
