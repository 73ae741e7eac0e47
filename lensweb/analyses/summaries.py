"""A finished analysis' summary: row count and the means over the positions its lens was trained on, ‖A‖
outliers left out, with a note that says which. Plain data (no presentation): pages and exports format it.
"""

from __future__ import annotations

from .families import FIRST_TRAINED, LENS, NLA, is_nla
from .models import AnalysisRow


def summarize(job_id: int, untrained: bool = False) -> dict:
    """`untrained`: the lens was never trained at all (the demo lens): its note says so."""
    rows = AnalysisRow.objects.filter(analysis_id=job_id).values_list("data", flat=True)
    return summarize_rows(rows, untrained=untrained)


# The positions a summary's means leave out: the Consistency Lenses were never trained on positions 0–5
# (shared/spec/lens-inference.md §3), the reference NLAs only on positions 50 and later (shared/spec/nla.md
# §5); and rows whose ‖A‖ the engine flagged far outside the lens' usual range (attention sinks), whose mse
# is large because A is. Position 0's mse alone is often dozens of times the others': a mean with it says
# little.
def first_trained_position(nla: bool) -> int:
    return FIRST_TRAINED[NLA if nla else LENS]


def summary_rows(rows: list[dict], nla: bool) -> tuple[list[dict], dict]:
    """(the rows a summary's means are over, what was left out and why): the trained positions (all the rows
    when none is), less the ‖A‖ outliers among them (unless they are all outliers)."""
    first = first_trained_position(nla)
    trained = [data for data in rows if data["position"] >= first]
    pool = trained or rows
    usual = [data for data in pool if data.get("activation_norm_outlier") is not True]
    untrained = sorted(data["position"] for data in rows if data["position"] < first) if trained else []
    outliers = (
        sorted(data["position"] for data in pool if data.get("activation_norm_outlier") is True)
        if usual
        else []
    )
    return usual or pool, {"trained_from": first, "untrained": untrained, "outliers": outliers}


def summarize_rows(rows, nla: bool | None = None, untrained: bool = False) -> dict:
    """Row count; mean and max mse, mean cos (and an NLA's mean fve and mse_nrm) over the positions the lens
    was trained on, ‖A‖ outliers left out (summary_rows), with which positions those are and a note that says
    so. `nla`: the family, by default from the rows (an NLA's carry mse_nrm)."""
    rows = [data for data in rows if isinstance(data.get("mse"), int | float)]
    if not rows:
        return {"rows": 0}
    if nla is None:
        nla = is_nla(None, rows)
    used, left = summary_rows(rows, nla)
    mses = [data["mse"] for data in used]
    positions = sorted(data["position"] for data in used)
    summary = {"rows": len(rows), "mean_mse": sum(mses) / len(mses), "max_mse": max(mses)}
    for key in ("fve_nrm", "cosine_similarity", "mse_nrm"):
        values = [data[key] for data in used if isinstance(data.get(key), int | float)]
        if values:
            summary[f"mean_{key}"] = sum(values) / len(values)
    summary["trained_from"] = left["trained_from"]
    summary["mean_positions"] = [positions[0], positions[-1]]
    summary["over"] = len(used)  # 1: a single position's numbers, not a mean
    if untrained:
        summary["untrained"] = True
    if left["untrained"]:
        summary["left_out"] = [left["untrained"][0], left["untrained"][-1]]
    if left["outliers"]:
        summary["outliers_left_out"] = left["outliers"][:20]
    summary["note"] = summary_note(summary)
    return summary


def _positions_text(a: int, b: int) -> str:
    return f"position {a}" if a == b else f"positions {a}–{b}"


def summary_note(summary: dict) -> str:
    """Which positions a summary's means cover, e.g. "positions 6–41; 0–5 left out: not trained on"; for a
    summary stored before positions were left out, that its means include them."""
    if "trained_from" not in summary:
        return "all positions, the untrained first ones included (summarised before they were left out)"
    first = summary["trained_from"]
    a, b = summary["mean_positions"]
    parts = [_positions_text(a, b)]
    if summary.get("over") == 1:
        parts[0] += " only"
    if "left_out" in summary:
        why = "as a trained lens' would be" if summary.get("untrained") else "not trained on"
        parts.append(f"{_positions_text(*summary['left_out'])} left out: {why}")
    elif a < first:
        parts[0] += f", none trained on (training starts at position {first})"
    outliers = summary.get("outliers_left_out") or []
    if outliers:
        shown = ", ".join(str(p) for p in outliers[:3]) + (", …" if len(outliers) > 3 else "")
        which = "position" if len(outliers) == 1 else "positions"
        parts.append(f"{which} {shown} left out: ‖A‖ far outside the lens' usual range")
    return "; ".join(parts)
