"""Numbers as operators read them: durations, bytes, rates."""

from django import template

from lensweb.analyses.formatting import duration, size

register = template.Library()


register.filter(duration)
register.filter(size)


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
