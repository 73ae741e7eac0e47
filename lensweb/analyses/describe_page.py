"""The "describe a vector" page, for people without a notebook: vectors pasted as JSON or uploaded as a NumPy
.npy file, explained by a lens as if each were its activation at a position (analyses.probes); the answer
polls until the worker has the rows."""

from __future__ import annotations

import io
import json

import numpy
from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_http_methods

from . import catalog, services
from .errors import QueueFull, QuotaExceeded, SubmissionError
from .fragments import CARD_SALIENCE_SCALE
from .models import Probe
from .rowview import row_view
from .rowview import words_html as row_words_html

MAX_NPY_BYTES = 4 * 1024 * 1024  # 256 vectors of 4,096 float32 values


class VectorsError(ValueError):
    pass


def vectors_from(text: str, upload) -> list:
    """The vectors a form sent: a .npy upload (1-D: one vector; 2-D: one a row) or JSON text (a list of
    numbers, or a list of such lists)."""
    if upload is not None:
        if upload.size > MAX_NPY_BYTES:
            raise VectorsError(f"the file is over {MAX_NPY_BYTES // (1024 * 1024)} MiB")
        try:
            array = numpy.load(io.BytesIO(upload.read(MAX_NPY_BYTES + 1)), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise VectorsError(f"not a NumPy .npy file of numbers ({exc})") from None
        if array.dtype.kind not in "fiu" or array.ndim not in (1, 2):
            raise VectorsError("the .npy file must hold numbers, one vector or one vector a row")
        return (array[None, :] if array.ndim == 1 else array).astype(float).tolist()
    try:
        value = json.loads(text)
    except ValueError:
        raise VectorsError("paste a JSON list of numbers, or a list of such lists") from None
    if isinstance(value, list) and value and all(isinstance(x, int | float) for x in value):
        return [value]
    return value


@require_http_methods(["GET", "POST"])
def describe(request):
    lenses = catalog.lenses_for(request.user)
    context = {
        "lenses": lenses,
        "default_lens": next((spec.id for spec in lenses if spec.default), ""),
        "vectors": "",
        "error": "",
    }
    if request.method == "POST":
        context.update(vectors=request.POST.get("vectors", "")[:200_000], lens=request.POST.get("lens"))
        try:
            vectors = vectors_from(context["vectors"], request.FILES.get("file"))
            temperature = float(request.POST.get("temperature") or 0)
            probe = services.do_submit_describe(
                request.user, request.POST.get("lens") or None, vectors, {"temperature": temperature}
            )
            context["probe"] = described_view(probe)
        except (VectorsError, ValueError) as exc:
            context["error"] = str(exc)
        except SubmissionError as exc:
            context["error"] = exc.message
        except (QuotaExceeded, QueueFull) as exc:
            context["error"] = str(exc)
    return render(request, "analyses/describe.html", context)


@require_GET
def described(request, probe_id):
    try:
        probe = services.get_probe_for(request.user, probe_id)
    except Probe.DoesNotExist:
        raise Http404("no such description") from None
    if probe.what != Probe.What.DESCRIBE:
        raise Http404("no such description")
    return render(request, "analyses/partials/described.html", {"probe": described_view(probe)})


def described_view(probe) -> dict:
    rows = []
    for data in (probe.result or {}).get("rows") or []:
        view = row_view(data, 0)
        rows.append(
            {
                "position": view.position,
                "words": row_words_html(view, CARD_SALIENCE_SCALE, False),
                "mse": view.mse_text,
            }
        )
    return {
        "id": probe.pk,
        "status": probe.status,
        "error": probe.error,
        "rows": rows,
        "n": probe.progress_total,
        "lens": probe.lens_id,
    }
