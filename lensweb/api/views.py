"""The JSON API's operations over the core's services: the same validation, bounds, queue and fairness as the
browser. Each one: schema-parsed request → a service → a serializer (checked against its response schema)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy
from django.conf import settings
from django.http import HttpResponse
from ninja import Query, Router, Schema, Status
from pydantic import Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from lensweb.accounts.ratelimits import retry_after
from lensweb.analyses import catalog
from lensweb.analyses import services as analyses
from lensweb.analyses.engine import get_engine
from lensweb.analyses.errors import LensUnavailable, NoWorker, QueueFull, QuotaExceeded, SubmissionError
from lensweb.analyses.models import Analysis, Generation, Probe
from lensweb.analyses.status import fleet_status
from lensweb.results import services as results
from lensweb.results.downloads import as_download

from . import schemas as s
from . import serializers
from .errors import ApiError, not_found, rate_limited, validation_refusal

router = Router()

# The refusals every authenticated operation may answer besides its own (api.py documents their headers).
COMMON = {401: s.Error, 429: s.Error, 500: s.Error}


# --- refusals ---------------------------------------------------------------------------------------------


def submission_error(exc: SubmissionError, is_chat: bool, option_fields) -> ApiError:
    """A 400 with the engine's own error code and the field it concerns."""
    field = exc.field
    code = getattr(exc.__cause__, "code", None)
    if code not in ("invalid_input", "invalid_option", "unknown_lens"):
        in_options = field in option_fields or (field or "").startswith("analysis_options")
        code = "invalid_option" if in_options else "invalid_input"
    if field == "text" and is_chat:
        field = "messages"
    if field is None and code == "invalid_option":
        field = "options"
    if field in option_fields:
        field = f"options.{field}"
    return ApiError(400, code, exc.message, field=field)


def refusal(exc: SubmissionError, is_chat: bool, option_fields) -> ApiError:
    """The one submit path's typed refusal as the API says it."""
    if isinstance(exc, LensUnavailable):  # the server's files, not the request: details are in the log
        return ApiError(503, "lens_unavailable", exc.message, retry_after=exc.retry_after)
    if isinstance(exc, NoWorker):
        return ApiError(503, "no_worker", exc.message, retry_after=exc.retry_after)
    if isinstance(exc, QuotaExceeded):
        return rate_limited(exc.retry_after, exc.message, code="quota_exceeded")
    if isinstance(exc, QueueFull):
        return rate_limited(exc.retry_after, exc.message, code="queue_full")
    return submission_error(exc, is_chat, option_fields)


def check_submit_rate(request, group: str) -> None:
    """The browser's per-user submit limit (same group for analyses: the API and the form share it)."""
    seconds = retry_after(request, group, "user", settings.LENSWEB_SUBMIT_RATE)
    if seconds is not None:
        raise rate_limited(seconds, f"you are submitting too fast; try again in {seconds} s")


# --- analyses ---------------------------------------------------------------------------------------------


def _get_analysis_for_user(request, analysis_id, write: bool = False) -> Analysis:
    try:
        return analyses.get_analysis_for(request.user, analysis_id, write=write)
    except Analysis.DoesNotExist:
        raise not_found("analysis") from None


def _submit_analysis(request, payload: s.AnalysisRequest) -> Analysis:
    try:
        return analyses.do_submit(
            request.user, payload.lens, payload.input_data(), payload.options_data(), require_worker=True
        )
    except SubmissionError as exc:
        raise refusal(exc, payload.messages is not None, analyses.OPTION_FIELDS) from None


@router.post(
    "/analyses",
    exclude_unset=True,  # optional row and result fields the engine did not give stay absent
    url_name="analyses",
    operation_id="submitAnalysis",
    summary="Queue an analysis of a text or a chat",
    description="The same validation, bounds, per-user caps and fair queue as the browser form. Answered 200 "
    "(already done) when the result cache has it.",
    response={200: s.AnalysisSubmitted, 202: s.AnalysisSubmitted, 400: s.Error, 413: s.Error, 503: s.Error}
    | COMMON,
    tags=["analyses"],
)
def submit_analysis(request, payload: s.AnalysisRequest, response: HttpResponse):
    check_submit_rate(request, "analyses.submit")
    job = _submit_analysis(request, payload)
    body = serializers.submitted_json(request, job)
    response["Location"] = body["url"]
    return Status(200 if job.status == Analysis.Status.DONE else 202, body)


class ListFilters(Schema):
    status: s.Status | None = None
    lens: str | None = Field(None, max_length=200)
    q: str | None = Field(None, max_length=500, description="text search in the input")
    created_after: datetime | None = None
    created_before: datetime | None = None
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = Field(None, max_length=200, description="`next_cursor` of the previous page")

    @field_validator("created_after", "created_before")
    @classmethod
    def _in_utc_range(cls, value: datetime | None) -> datetime | None:
        """A time the database can hold: year 9999 at a negative offset is year 10000 in UTC."""
        if value is None or value.tzinfo is None:
            return value
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError("the time is out of range once converted to UTC") from None


@router.get(
    "/analyses",
    exclude_unset=True,  # optional row and result fields the engine did not give stay absent
    url_name="analyses",
    operation_id="listAnalyses",
    summary="Your analyses, newest first, without rows (filters; cursor pagination)",
    response={200: s.AnalysisPage, 400: s.Error} | COMMON,
    tags=["analyses"],
)
def list_analyses(request, filters: Query[ListFilters]):
    try:
        page, next_cursor = results.history_page(
            request.user,
            status=filters.status,
            lens=filters.lens,
            q=filters.q,
            created_after=filters.created_after,
            created_before=filters.created_before,
            limit=filters.limit,
            cursor=filters.cursor,
        )
    except ValueError as exc:
        raise ApiError(400, "invalid_request", str(exc), field="cursor") from None
    return {
        "items": [serializers.analysis_json(request, job, include_rows=False) for job in page],
        "next_cursor": next_cursor,
    }


@router.post(
    "/analyses/batch",
    exclude_unset=True,  # optional row and result fields the engine did not give stay absent
    url_name="analyses_batch",
    operation_id="submitAnalyses",
    summary="Queue several analyses in one request (JSON, or JSON Lines: one item per line)",
    description="Each item is checked and queued on its own, in order: the answer has one entry per item, the "
    "queued job or the item's refusal (a bad item does not refuse the others). With "
    "`Content-Type: application/x-ndjson` the body is one AnalysisRequest per line.",
    response={200: s.BatchAnswer, 400: s.Error, 413: s.Error} | COMMON,
    tags=["analyses"],
)
def submit_analyses(request, payload: s.BatchRequest):
    limit = settings.LENSWEB_API_MAX_BATCH
    if len(payload.items) > limit:
        raise ApiError(
            400,
            "invalid_body",
            f"a batch holds at most {limit} items; got {len(payload.items)}",
            field="items",
        )
    check_submit_rate(request, "analyses.submit")  # once per batch: the caps and quotas count each item
    return {"items": [_batch_item(request, item) for item in payload.items]}


def _batch_item(request, item) -> dict:
    try:
        if not isinstance(item, dict):
            raise ApiError(400, "invalid_body", "each item must be a JSON object")
        try:
            parsed = s.AnalysisRequest.model_validate(item)
        except PydanticValidationError as exc:
            errors = [{**e, "loc": ("body", "payload", *e["loc"])} for e in exc.errors(include_url=False)]
            raise validation_refusal(errors) from None
        job = _submit_analysis(request, parsed)
    except ApiError as exc:
        return exc.body()
    return serializers.submitted_json(request, job)


@router.get(
    "/analyses/{id:analysis_id}",
    exclude_unset=True,  # optional row and result fields the engine did not give stay absent
    url_name="analysis",
    operation_id="getAnalysis",
    summary="An analysis: status, queue position, progress, the rows so far, metadata",
    response={200: s.Analysis, 404: s.Error} | COMMON | {400: s.Error},
    tags=["analyses"],
)
def get_analysis(
    request,
    analysis_id: int,
    after: int | None = Query(None, description="only rows with a position greater than this (for polling)"),
):
    job = _get_analysis_for_user(request, analysis_id)
    return serializers.analysis_json(request, job, rows_after=after)


@router.delete(
    "/analyses/{id:analysis_id}",
    exclude_unset=True,  # optional row and result fields the engine did not give stay absent
    url_name="analysis",
    operation_id="cancelAnalysis",
    summary="Cancel: a queued analysis never starts; a running one stops within a batch",
    response={200: s.Analysis, 403: s.Error, 404: s.Error} | COMMON,
    tags=["analyses"],
)
def cancel_analysis(request, analysis_id: int):
    job = _get_analysis_for_user(request, analysis_id)
    if job.owner_id != request.user.pk:
        raise ApiError(403, "forbidden", "staff may read any analysis, but only its owner may cancel it")
    job = analyses.do_cancel(request.user, job.pk)
    return serializers.analysis_json(request, job, include_rows=False)


def _file_doc(media: str) -> dict:
    """A download's 200: the file's media type and shape (ninja knows its schemas' answers only): the JSON
    export is one object in the research file format, the CSV export text."""
    schema = (
        {
            "type": "object",
            "description": "the research file format: `metadata`, and `data` with one row a position",
        }
        if media == "application/json"
        else {"type": "string"}
    )
    file = {"description": "the file, as the browser's download", "content": {media: {"schema": schema}}}
    return {"responses": {"200": file}}


@router.get(
    "/analyses/{id:analysis_id}/export.json",
    exclude_unset=True,  # optional row and result fields the engine did not give stay absent
    url_name="analysis_export_json",
    operation_id="exportAnalysisJson",
    summary="The analysis as JSON: what was computed, null for what was not (the browser's JSON download)",
    response={200: None, 404: s.Error} | COMMON,
    openapi_extra=_file_doc("application/json"),
    tags=["analyses"],
)
def export_analysis_json(request, analysis_id: int):
    return as_download(*results.analysis_download(_get_analysis_for_user(request, analysis_id), "json"))


@router.get(
    "/analyses/{id:analysis_id}/export.research.json",
    exclude_unset=True,
    url_name="analysis_export_research_json",
    operation_id="exportAnalysisResearchJson",
    summary='The analysis in the research site\'s shape: "[token]" after explanations, -1.0 for KL not computed',
    response={200: None, 404: s.Error} | COMMON,
    openapi_extra=_file_doc("application/json"),
    tags=["analyses"],
)
def export_analysis_research_json(request, analysis_id: int):
    job = _get_analysis_for_user(request, analysis_id)
    return as_download(*results.analysis_download(job, "research"))


@router.get(
    "/analyses/{id:analysis_id}/export.csv",
    exclude_unset=True,  # optional row and result fields the engine did not give stay absent
    url_name="analysis_export_csv",
    operation_id="exportAnalysisCsv",
    summary="The analysis as CSV, one line per position (the browser's CSV download, byte for byte)",
    response={200: None, 400: s.Error, 404: s.Error} | COMMON,
    openapi_extra=_file_doc("text/csv"),
    tags=["analyses"],
)
def export_analysis_csv(request, analysis_id: int, raw: bool = Query(False, description="no formula guard")):
    job = _get_analysis_for_user(request, analysis_id)
    return as_download(*results.analysis_download(job, "csv", raw=raw))


# --- lenses -----------------------------------------------------------------------------------------------


@router.get(
    "/lenses",
    exclude_unset=True,  # optional row and result fields the engine did not give stay absent
    url_name="lenses",
    operation_id="listLenses",
    summary="The lenses this server serves",
    response={200: s.LensList, 503: s.Error} | COMMON,
    tags=["lenses"],
)
def lenses(request):
    engine = get_engine()
    try:
        specs = catalog.lenses_for(request.user)
    except Exception as exc:  # a broken registry: say so rather than 500
        raise ApiError(503, "lenses_unavailable", f"the lens registry cannot be read: {exc}") from None
    known = catalog.entries()
    return {
        "lenses": [serializers.lens_json(spec, engine.lens_notes(spec), known.get(spec.id)) for spec in specs]
    }


@router.get(
    "/status",
    url_name="status",
    operation_id="getStatus",
    summary="Workers online, the queue, and each lens' state (loaded, loading, cold, unserved)",
    response={200: s.ServerStatus} | COMMON,
    tags=["lenses"],
)
def server_status(request):
    return fleet_status(request.user).to_dict()


# --- generations ------------------------------------------------------------------------------------------


def _get_generation_for_user(request, generation_id) -> Generation:
    try:
        return analyses.get_generation_for(request.user, generation_id)
    except Generation.DoesNotExist:
        raise not_found("generation") from None


@router.post(
    "/generations",
    exclude_unset=True,  # optional row and result fields the engine did not give stay absent
    url_name="generations",
    operation_id="submitGeneration",
    summary="Queue a continuation of a text or a chat (samples from the lens' base model)",
    response={202: s.Generation, 400: s.Error, 413: s.Error, 503: s.Error} | COMMON,
    tags=["generations"],
)
def submit_generation(request, payload: s.GenerationRequest, response: HttpResponse):
    check_submit_rate(request, "api.generations.submit")
    try:
        generation = analyses.do_submit_generation(
            request.user,
            payload.lens,
            payload.input_data(),
            payload.options_data(),
            then_analyse=payload.then_analyse_options(),
            require_worker=True,
        )
    except SubmissionError as exc:
        raise refusal(exc, payload.messages is not None, analyses.GENERATION_OPTION_FIELDS) from None
    generation.refresh_from_db()  # a worker may have taken it already
    body = serializers.generation_json(request, generation)
    response["Location"] = body["url"]
    return Status(202, body)


@router.get(
    "/generations/{id:generation_id}",
    exclude_unset=True,  # optional row and result fields the engine did not give stay absent
    url_name="generation",
    operation_id="getGeneration",
    summary="A generation: status, queue position, result",
    response={200: s.Generation, 404: s.Error} | COMMON,
    tags=["generations"],
)
def get_generation(request, generation_id: int):
    return serializers.generation_json(request, _get_generation_for_user(request, generation_id))


@router.delete(
    "/generations/{id:generation_id}",
    exclude_unset=True,  # optional row and result fields the engine did not give stay absent
    url_name="generation",
    operation_id="cancelGeneration",
    summary="Cancel a generation",
    response={200: s.Generation, 403: s.Error, 404: s.Error} | COMMON,
    tags=["generations"],
)
def cancel_generation(request, generation_id: int):
    generation = _get_generation_for_user(request, generation_id)
    if generation.owner_id != request.user.pk:
        raise ApiError(403, "forbidden", "staff may read any generation, but only its owner may cancel it")
    generation = analyses.do_cancel_generation(request.user, generation.pk)
    return serializers.generation_json(request, generation)


@router.get(
    "/generations/{id:generation_id}/export.json",
    exclude_unset=True,  # optional row and result fields the engine did not give stay absent
    url_name="generation_export_json",
    operation_id="exportGenerationJson",
    summary="The generation as JSON (the browser's download, byte for byte)",
    response={200: None, 404: s.Error} | COMMON,
    openapi_extra=_file_doc("application/json"),
    tags=["generations"],
)
def export_generation_json(request, generation_id: int):
    generation = _get_generation_for_user(request, generation_id)
    return as_download(*results.generation_download(generation, "json"))


@router.get(
    "/generations/{id:generation_id}/export.csv",
    exclude_unset=True,  # optional row and result fields the engine did not give stay absent
    url_name="generation_export_csv",
    operation_id="exportGenerationCsv",
    summary="The generation as CSV, one line per sample (the browser's download, byte for byte)",
    response={200: None, 400: s.Error, 404: s.Error} | COMMON,
    openapi_extra=_file_doc("text/csv"),
    tags=["generations"],
)
def export_generation_csv(
    request, generation_id: int, raw: bool = Query(False, description="no formula guard")
):
    generation = _get_generation_for_user(request, generation_id)
    return as_download(*results.generation_download(generation, "csv", raw=raw))


# --- probes: your own explanation scored, activations read --------------------------------------------------


def _queued_probe(request, response: HttpResponse, submit, option_fields=analyses.OPTION_FIELDS) -> Status:
    """`submit()` queues a probe through the core; the answer is 202 with the probe and where to poll it.
    `option_fields`: the refusal fields that are options (a score's `position` is the request's own)."""
    check_submit_rate(request, "analyses.submit")
    try:
        probe = submit()
    except Analysis.DoesNotExist:
        raise not_found("analysis") from None
    except SubmissionError as exc:
        raise refusal(exc, False, option_fields) from None
    probe.refresh_from_db()  # a worker may have answered it already
    return _accepted(request, response, probe)


def _accepted(request, response: HttpResponse, probe) -> Status:
    """202 with the probe and, in Location, where to poll it."""
    body = serializers.probe_json(request, probe)
    response["Location"] = body["url"]
    return Status(202, body)


def _json_or_npy(schema: str) -> dict:
    """The OpenAPI entry of a 200 that is JSON, or a NumPy .npy file when asked with Accept."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    json_schema = {"schema": {"$ref": f"#/components/schemas/{schema}"}}
    return {
        "responses": {
            "200": {"content": {"application/json": json_schema, "application/octet-stream": binary}}
        }
    }


def _npy_asked(request, probe) -> bool:
    """A done activations read, asked for as a .npy file."""
    wants = "application/octet-stream" in request.headers.get("Accept", "")
    return wants and probe.what == "activations" and probe.status == Analysis.Status.DONE


def _submit_probe(request, analysis_id: int, what: str, data: dict, response: HttpResponse):
    return _queued_probe(
        request, response, lambda: analyses.do_submit_probe(request.user, analysis_id, what, data), ()
    )


def _options_of(payload) -> dict:
    return payload.options.model_dump(exclude_unset=True) if payload.options else {}


@router.post(
    "/analyses/{id:analysis_id}/scores",
    exclude_unset=True,  # a row's fields the engine did not give stay absent
    url_name="analysis_scores",
    operation_id="scoreExplanation",
    summary="Score your own explanation at a position of the analysis' text",
    description="Queued like any job (one encoder pass; an NLA's AR for an NLA) and answered by a worker: "
    "poll the probe's `url` until `status` is done; its `result.row` has the numbers a row has (mse, "
    "relative_rmse, cosine_similarity, token_salience with the analysis' salience option, kl with its kl) and "
    "`delta_mse` the difference to the lens' own row. Scoring a row's own `explanation_token_ids` gives that "
    "row's numbers again. Only the analysis' owner scores it; scores are kept with it (its JSON export's "
    "`user_scores`).",
    response={202: s.Probe, 400: s.Error, 404: s.Error, 413: s.Error, 503: s.Error} | COMMON,
    tags=["probes"],
)
def score_explanation(request, analysis_id: int, payload: s.ScoreRequest, response: HttpResponse):
    return _submit_probe(request, analysis_id, "score", payload.model_dump(exclude_none=True), response)


@router.get(
    "/analyses/{id:analysis_id}/scores",
    exclude_unset=True,  # a row's fields the engine did not give stay absent
    url_name="analysis_scores",
    operation_id="listScores",
    summary="The scores kept with the analysis (done ones, oldest first)",
    response={200: list[s.Probe], 404: s.Error} | COMMON,
    tags=["probes"],
)
def list_scores(request, analysis_id: int):
    analysis = _get_analysis_for_user(request, analysis_id)
    done = analysis.probes.filter(what="score", status=Analysis.Status.DONE).order_by("finished_at", "id")
    return [serializers.probe_json(request, probe) for probe in done]


@router.post(
    "/analyses/{id:analysis_id}/activations",
    exclude_unset=True,  # a row's fields the engine did not give stay absent
    url_name="analysis_activations",
    operation_id="readActivations",
    summary="Read the lens' layer activations at positions of the analysis' text",
    description="Queued like any job (one forward of the text) and answered by a worker: poll the probe's `url`; "
    "its `result.activations` holds one float32 vector per position (ask it with `Accept: "
    "application/octet-stream` for a NumPy .npy file).",
    response={202: s.Probe, 400: s.Error, 404: s.Error, 413: s.Error, 503: s.Error} | COMMON,
    tags=["probes"],
)
def read_activations(request, analysis_id: int, payload: s.ActivationsRequest, response: HttpResponse):
    return _submit_probe(request, analysis_id, "activations", payload.model_dump(), response)


@router.post(
    "/describe",
    exclude_unset=True,  # a row's fields the engine did not give stay absent
    url_name="describe",
    operation_id="describeVectors",
    summary="Explain vectors of your own as if each were the lens' activation at a position",
    description="Queued like any job (the decoder and the encoder, as for an analysis' rows; KL refused: a vector "
    "has no text) and answered by a worker: poll the probe's `url`; its `result.rows` has row i for vector i. A "
    "vector of the wrong width is refused at once, naming the lens' width. A greedy row's activation (temperature "
    "0), described with its token, gives that row's explanation again.",
    response={202: s.Probe, 400: s.Error, 413: s.Error, 503: s.Error} | COMMON,
    tags=["probes"],
)
def describe_vectors(request, payload: s.DescribeRequest, response: HttpResponse):
    return _queued_probe(
        request,
        response,
        lambda: analyses.do_submit_describe(
            request.user, payload.lens, payload.vectors, _options_of(payload), payload.token_ids
        ),
    )


@router.post(
    "/compare",
    exclude_unset=True,  # a row's fields the engine did not give stay absent
    url_name="compare",
    operation_id="explainDifference",
    summary="Explain the difference of two activations (a − b)",
    description="Each side a position of one of your analyses or a vector of your own, both of one lens. Queued "
    "like any job (a forward per analysis side, then the decoder and the encoder) and answered by a worker: "
    "poll the probe's `url`; its `result.row` explains a − b and `result.diff_norm` is ‖a − b‖.",
    response={202: s.Probe, 400: s.Error, 413: s.Error, 503: s.Error} | COMMON,
    tags=["probes"],
)
def explain_difference(request, payload: s.CompareRequest, response: HttpResponse):
    sides = [side.model_dump(exclude_none=True) for side in (payload.a, payload.b)]
    return _queued_probe(
        request,
        response,
        lambda: analyses.do_submit_compare(request.user, *sides, payload.lens, _options_of(payload)),
    )


@router.get(
    "/analyses/{id:analysis_id}/activations",
    exclude_unset=True,
    url_name="analysis_activations",
    operation_id="getActivations",
    summary="The lens' layer activations at positions of the analysis' text (200 when read, else 202)",
    description="`?positions=3,7,-1`. Read by a worker like any job: the first ask queues the read and answers "
    "202 with the probe (`Location`: where to poll); asked again once it is done, 200 with `{positions, "
    "activations}` (one float32 vector per position), or a NumPy .npy file with `Accept: "
    "application/octet-stream`. The same positions asked again reuse the same read.",
    response={200: s.Activations, 202: s.Probe, 400: s.Error, 404: s.Error, 503: s.Error} | COMMON,
    openapi_extra=_json_or_npy("Activations"),
    tags=["probes"],
)
def get_activations(
    request,
    analysis_id: int,
    response: HttpResponse,
    positions: str = Query(..., max_length=1280, description="comma-separated token positions (at most 256)"),
):
    try:
        asked = [int(p) for p in positions.split(",") if p.strip()]
    except ValueError:
        raise ApiError(
            400, "invalid_input", "positions: whole numbers separated by commas", field="positions"
        ) from None
    try:
        probe = analyses.activations_probe(request.user, analysis_id, asked)
    except Analysis.DoesNotExist:
        raise not_found("analysis") from None
    except SubmissionError as exc:
        raise refusal(exc, False, ()) from None
    if probe.status != Analysis.Status.DONE:
        return _accepted(request, response, probe)
    if _npy_asked(request, probe):
        return HttpResponse(npy_bytes(probe.result["activations"]), content_type="application/octet-stream")
    return Status(200, {"positions": probe.result["positions"], "activations": probe.result["activations"]})


@router.get(
    "/probes/{id:probe_id}",
    exclude_unset=True,  # a row's fields the engine did not give stay absent
    url_name="probe",
    operation_id="getProbe",
    summary="A score or an activations read: status, then its result",
    description="With `Accept: application/octet-stream`, a done activations read is answered as a NumPy .npy "
    "file (float32, one row per position).",
    response={200: s.Probe, 404: s.Error} | COMMON,
    openapi_extra=_json_or_npy("Probe"),
    tags=["probes"],
)
def get_probe(request, probe_id: int):
    try:
        probe = analyses.get_probe_for(request.user, probe_id)
    except Probe.DoesNotExist:
        raise not_found("probe") from None
    if _npy_asked(request, probe):
        return HttpResponse(npy_bytes(probe.result["activations"]), content_type="application/octet-stream")
    return serializers.probe_json(request, probe)


def npy_bytes(vectors: list[list[float]]) -> bytes:
    buffer = io.BytesIO()
    numpy.save(buffer, numpy.asarray(vectors, dtype="<f4"), allow_pickle=False)
    return buffer.getvalue()
