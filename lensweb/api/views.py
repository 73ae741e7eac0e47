"""The JSON API over the core's services: the same validation, bounds, queue and fairness as the browser.

Each view: @api_view (key, limits, methods, JSON errors) → parse → a service → a serializer.
"""

from __future__ import annotations

from django.conf import settings
from django.http import JsonResponse

from lensweb.accounts.ratelimits import retry_after
from lensweb.analyses import services as analyses
from lensweb.analyses.engine import get_engine
from lensweb.analyses.errors import LensUnavailable, NoWorker, QueueFull, QuotaExceeded, SubmissionError
from lensweb.analyses.forms import JSONTooDeep, load_json
from lensweb.analyses.models import Analysis, Generation

from . import openapi, serializers
from .auth import api_view
from .errors import ApiError, bad_request, not_found, rate_limited

ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
ANALYSIS_FIELDS = {"text", "messages", "lens", "options", "default_system_prompt"}
GENERATION_FIELDS = ANALYSIS_FIELDS | {"then_analyse", "analysis_options"}


# --- request parsing ----------------------------------------------------------------------------------


def read_json(request) -> dict:
    """The body as a JSON object. The size is checked before anything is parsed (413)."""
    limit = settings.LENSWEB_API_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise bad_request("the Content-Length header is not a number", code="invalid_json") from None
    too_large = ApiError(
        413,
        "payload_too_large",
        f"the request body is larger than {limit:,} bytes; send a shorter text or chat",
    )
    if declared > limit:
        raise too_large
    raw = request.read(limit + 1)
    if len(raw) > limit:
        raise too_large
    try:
        data = load_json(raw)
    except JSONTooDeep as exc:
        raise bad_request(f"the body is refused: {exc}", code="invalid_body") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object", code="invalid_body")
    return data


def parse_submission(body: dict, allowed: set[str]) -> tuple[str | None, dict, dict]:
    """(lens id, input data, options data) from a submission body; types only, the engine checks values."""
    unknown = set(body) - allowed
    if unknown:
        raise bad_request(
            f"unknown field(s): {', '.join(sorted(unknown))}; expected {', '.join(sorted(allowed))}",
            field=sorted(unknown)[0],
            code="invalid_body",
        )
    text, messages = body.get("text"), body.get("messages")
    if (text is None) == (messages is None):
        raise bad_request(
            'give either "text" (a string) or "messages" (a list of {role, content}), not both or neither',
            field="text",
            code="invalid_input",
        )
    if text is not None and not isinstance(text, str):
        raise bad_request('"text" must be a string', field="text", code="invalid_input")
    if messages is not None and not isinstance(messages, list):
        raise bad_request(
            '"messages" must be a list of {role, content} objects', field="messages", code="invalid_input"
        )
    lens = body.get("lens")
    if lens is not None and (not isinstance(lens, str) or not lens):
        raise bad_request(
            '"lens" must be a lens id (a string); see GET /api/v1/lenses', field="lens", code="unknown_lens"
        )
    options = body.get("options", {})
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise bad_request('"options" must be an object', field="options", code="invalid_option")
    input_data = {"text": text} if text is not None else {"messages": messages}
    if "default_system_prompt" in body:  # the engine checks it is a boolean given with messages
        input_data["default_system_prompt"] = body["default_system_prompt"]
    return lens, input_data, options


def submission_error(exc: SubmissionError, is_chat: bool, option_fields) -> ApiError:
    """A 400 with the engine's own error code and the field it concerns (a 503 if the lens is at fault)."""
    if isinstance(exc, LensUnavailable):
        return lens_unavailable(exc)
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


def check_submit_rate(request, group: str) -> None:
    """The browser's per-user submit limit (same group for analyses: the API and the form share it)."""
    seconds = retry_after(request, group, "user", settings.LENSWEB_SUBMIT_RATE)
    if seconds is not None:
        raise rate_limited(seconds, f"you are submitting too fast; try again in {seconds} s")


def lens_unavailable(exc: LensUnavailable) -> ApiError:
    """The server's files, not the request: a 503 without details (they are in the server log)."""
    return ApiError(503, "lens_unavailable", exc.message, retry_after=exc.retry_after)


def refusal(exc: SubmissionError, is_chat: bool, option_fields) -> ApiError:
    """The one submit path's typed refusal as the API says it."""
    if isinstance(exc, LensUnavailable):
        return lens_unavailable(exc)
    if isinstance(exc, NoWorker):
        return ApiError(503, "no_worker", exc.message, retry_after=exc.retry_after)
    if isinstance(exc, QuotaExceeded):
        return rate_limited(exc.retry_after, exc.message, code="quota_exceeded")
    if isinstance(exc, QueueFull):
        return rate_limited(exc.retry_after, exc.message, code="queue_full")
    return submission_error(exc, is_chat, option_fields)


# --- analyses ---------------------------------------------------------------------------------------------


def _get_analysis_for_user(request, analysis_id, write: bool = False) -> Analysis:
    try:
        return analyses.get_analysis_for(request.user, analysis_id, write=write)
    except Analysis.DoesNotExist:
        raise not_found("analysis") from None


@api_view(("POST",))
def analyses_collection(request):
    check_submit_rate(request, "analyses.submit")
    lens, input_data, options_data = parse_submission(read_json(request), ANALYSIS_FIELDS)
    try:
        job = analyses.do_submit(request.user, lens, input_data, options_data, require_worker=True)
    except SubmissionError as exc:
        raise refusal(exc, "messages" in input_data, analyses.OPTION_FIELDS) from None
    return _submitted(
        request, job, cached=job.status == Analysis.Status.DONE and bool(job.metadata.get("cached"))
    )


def _submitted(request, job: Analysis, cached: bool) -> JsonResponse:
    body = serializers.submitted_json(request, job, cached=cached)
    response = JsonResponse(body, status=200 if job.status == Analysis.Status.DONE else 202)
    response["Location"] = body["url"]
    return response


@api_view(("GET", "DELETE"))
def analysis_detail(request, analysis_id: int):
    job = _get_analysis_for_user(request, analysis_id)
    if request.method == "DELETE":
        if job.owner_id != request.user.pk:
            raise ApiError(403, "forbidden", "staff may read any analysis, but only its owner may cancel it")
        job = analyses.do_cancel(request.user, job.pk)
        return JsonResponse(serializers.analysis_json(request, job, include_rows=False))
    after = request.GET.get("after")
    if after is not None:
        try:
            after = int(after)
        except ValueError:
            raise bad_request('"after" must be a position (a whole number)', field="after") from None
    return JsonResponse(serializers.analysis_json(request, job, rows_after=after))


# --- lenses ---------------------------------------------------------------------------------------------


@api_view(("GET",))
def lenses(request):
    engine = get_engine()
    try:
        specs = engine.lenses()
    except Exception as exc:  # a broken registry: say so rather than 500
        raise ApiError(503, "lenses_unavailable", f"the lens registry cannot be read: {exc}") from None
    return JsonResponse({"lenses": [serializers.lens_json(spec, engine.lens_notes(spec)) for spec in specs]})


# --- generations ----------------------------------------------------------------------------------------


def _get_generation_for_user(request, generation_id) -> Generation:
    try:
        return analyses.get_generation_for(request.user, generation_id)
    except Generation.DoesNotExist:
        raise not_found("generation") from None


def parse_then_analyse(body: dict) -> dict | None:
    """`then_analyse: true` with the analysis' options under `analysis_options` (or none: the defaults)."""
    then = body.get("then_analyse", False)
    if not isinstance(then, bool):
        raise bad_request('"then_analyse" must be true or false', field="then_analyse", code="invalid_body")
    options = body.get("analysis_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request(
            '"analysis_options" must be an object', field="analysis_options", code="invalid_option"
        )
    if options is not None and not then:
        raise bad_request(
            '"analysis_options" goes with "then_analyse": true', field="analysis_options", code="invalid_body"
        )
    return (options or {}) if then else None


@api_view(("POST",))
def generations_collection(request):
    check_submit_rate(request, "api.generations.submit")
    body = read_json(request)
    lens, input_data, options_data = parse_submission(body, GENERATION_FIELDS)
    then_analyse = parse_then_analyse(body)
    try:
        generation = analyses.do_submit_generation(
            request.user, lens, input_data, options_data, then_analyse=then_analyse, require_worker=True
        )
    except SubmissionError as exc:
        raise refusal(exc, "messages" in input_data, analyses.GENERATION_OPTION_FIELDS) from None
    generation.refresh_from_db()  # a worker may have taken it already
    body = serializers.generation_json(request, generation)
    response = JsonResponse(body, status=202)
    response["Location"] = body["url"]
    return response


@api_view(("GET", "DELETE"))
def generation_detail(request, generation_id: int):
    generation = _get_generation_for_user(request, generation_id)
    if request.method == "DELETE":
        if generation.owner_id != request.user.pk:
            raise ApiError(
                403, "forbidden", "staff may read any generation, but only its owner may cancel it"
            )
        generation = analyses.do_cancel_generation(request.user, generation.pk)
    return JsonResponse(serializers.generation_json(request, generation))


# --- the document and unknown routes ------------------------------------------------------------------


@api_view(("GET",), authenticated=False)
def openapi_document(request):
    return JsonResponse(openapi.document())


@api_view(ALL_METHODS, authenticated=False)
def unknown_route(request, rest=""):
    raise ApiError(404, "not_found", f"there is no API route {request.path}; see /api/v1/openapi.json")
