"""Numbers as operators read them: durations, bytes, rates."""

from django import template

register = template.Library()


@register.filter
def duration(seconds) -> str:
    if seconds is None or seconds == "":
        return "–"
    seconds = float(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


@register.filter
def size(n) -> str:
    if n is None or n == "":
        return "–"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@register.filter
def percent(ratio) -> str:
    if ratio is None or ratio == "":
        return "–"
    return f"{100 * float(ratio):.1f} %"


@register.filter
def rate(value) -> str:
    if value is None:
        return "–"
    value = float(value)
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


@register.filter
def duration_window(window) -> str:
    """A timedelta as '5 min'."""
    return duration(window.total_seconds()).replace(".0 ", " ")


@register.filter
def live_count(workers) -> int:
    return sum(1 for w in workers if w.live)
