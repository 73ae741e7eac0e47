"""Small server-rendered SVG line charts: geometry here, markup in templates/monitoring/partials/chart.html."""

from __future__ import annotations

from dataclasses import dataclass

WIDTH, HEIGHT, PAD = 360, 80, 2


@dataclass(frozen=True)
class LineChart:
    title: str
    unit: str
    width: int
    height: int
    points: str  # the polyline's "x,y x,y …"
    area: str  # the same line closed along the bottom, for the fill
    peak: float
    last: float
    first_label: str
    last_label: str


def line_chart(title: str, unit: str, values: list[float], labels: tuple[str, str] = ("", "")) -> LineChart:
    """Values left to right (oldest first), scaled to the chart; y grows downwards in SVG."""
    values = [float(v) for v in values] or [0.0]
    peak = max(values)
    scale = (HEIGHT - 2 * PAD) / peak if peak > 0 else 0.0
    step = (WIDTH - 2 * PAD) / max(1, len(values) - 1)
    coords = [(PAD + i * step, HEIGHT - PAD - v * scale) for i, v in enumerate(values)]
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    bottom = HEIGHT - PAD
    area = f"{coords[0][0]:.1f},{bottom} {points} {coords[-1][0]:.1f},{bottom}"
    return LineChart(title, unit, WIDTH, HEIGHT, points, area, peak, values[-1], *labels)
