"""The API's request and response shapes. django-ninja derives the OpenAPI document from these classes, and
the same classes parse every request and serialise every answer, so the document cannot drift from the code.

Requests are strict (no coercion of "5" into 5) and refuse unknown fields; the bounds are the engine's
defaults (an operator may lower the text and token bounds, and the engine checks those at submit).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from inference import rows
from inference import types as engine_types
from inference.limits import DEFAULT_LIMITS as L
from inference.options import options_of

Status = Literal["queued", "running", "done", "failed", "cancelled"]

ERROR_CODES = (
    "invalid_json",
    "invalid_body",
    "invalid_input",
    "invalid_option",
    "unknown_lens",
    "invalid_request",
    "unauthenticated",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "payload_too_large",
    "rate_limited",
    "quota_exceeded",
    "queue_full",
    "too_many_streams",
    "no_worker",
    "lens_unavailable",
    "lenses_unavailable",
    "internal_error",
)


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Answer(BaseModel):
    # Rows and results carry engine fields the schema names only in part (NLA rows add their own): kept.
    model_config = ConfigDict(extra="allow")


# --- errors -----------------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: Literal[ERROR_CODES]  # type: ignore[valid-type]
    message: str = Field(description="what was wrong and what to do")
    field: str | None = Field(
        None, description="the request field at fault, e.g. `text` or `options.best_of_k`"
    )


class Error(BaseModel):
    model_config = ConfigDict(extra="forbid")
    error: ErrorDetail


# --- requests ---------------------------------------------------------------------------------------------


class Message(Request):
    role: Literal["system", "user", "assistant"]
    content: str


_ONE_INPUT = {"oneOf": [{"required": ["text"]}, {"required": ["messages"]}]}


class InputFields(Request):
    """Exactly one of `text` and `messages`."""

    text: str | None = Field(None, min_length=1, max_length=L.max_text_chars)
    messages: list[Message] | None = Field(None, min_length=1, max_length=L.max_messages)
    lens: str | None = Field(
        None, min_length=1, description="a lens id from GET /lenses; default: the default lens"
    )
    default_system_prompt: bool | None = Field(
        None,
        description="chats only: false drops the template's default system prompt (where the template lets an "
        "empty system turn replace it; see GET /lenses). Default: true",
    )

    @model_validator(mode="after")
    def _one_input(self):
        if (self.text is None) == (self.messages is None):
            raise ValueError(
                'give either "text" (a string) or "messages" (a list of {role, content}), not both or neither'
            )
        return self

    def input_data(self) -> dict:
        data = {"text": self.text} if self.text is not None else {"messages": self.messages_data()}
        if "default_system_prompt" in self.model_fields_set:  # the engine checks it goes with messages
            data["default_system_prompt"] = self.default_system_prompt
        return data

    def messages_data(self) -> list[dict]:
        return [m.model_dump() for m in self.messages or []]


def options_model(cls, doc: str) -> type[Request]:
    """The request schema of an options dataclass, from its declarations (inference.options): types,
    defaults, bounds (the engine's defaults; a deployment's tighter ones are refused with a 400) and help."""
    fields: dict[str, Any] = {}
    for opt in options_of(cls):
        low, high = opt.bounds(L)
        if opt.kind == "ints":
            annotation: Any = list[Annotated[int, Field(ge=low, le=high)]]
            field = Field(opt.default, max_length=opt.max_items(L), description=opt.help)
        elif opt.kind == "bool":
            annotation, field = bool, Field(opt.default, description=opt.help)
        else:
            annotation = int if opt.kind == "int" else float
            field = Field(opt.default, ge=low, le=high, description=opt.help)
        fields[opt.name] = (annotation | None if opt.nullable else annotation, field)
    return create_model(cls.__name__, __base__=Request, __doc__=doc, **fields)


AnalysisOptions = options_model(engine_types.AnalysisOptions, "Unset options take the defaults shown.")
GenerationOptions = options_model(engine_types.GenerationOptions, "Unset options take the defaults shown.")


class AnalysisRequest(InputFields):
    model_config = ConfigDict(json_schema_extra=_ONE_INPUT)
    options: AnalysisOptions | None = None

    def options_data(self) -> dict:
        return self.options.model_dump(exclude_unset=True) if self.options else {}


class GenerationRequest(InputFields):
    model_config = ConfigDict(json_schema_extra=_ONE_INPUT)
    options: GenerationOptions | None = None
    then_analyse: bool = Field(
        False,
        description="when the generation is done, queue the analysis of the conversation with the reply (or "
        "the text continued); n must be 1. The generation then names it (analysis_id)",
    )
    analysis_options: AnalysisOptions | None = Field(
        None, description="with then_analyse: the analysis' options (default: the defaults)"
    )

    @field_validator("analysis_options")
    @classmethod
    def _options_go_with_then_analyse(cls, value, info: ValidationInfo):
        if value is not None and not info.data.get("then_analyse"):
            raise ValueError('"analysis_options" goes with "then_analyse": true')
        return value

    def options_data(self) -> dict:
        return self.options.model_dump(exclude_unset=True) if self.options else {}

    def then_analyse_options(self) -> dict | None:
        if not self.then_analyse:
            return None
        return self.analysis_options.model_dump(exclude_unset=True) if self.analysis_options else {}


class BatchRequest(Request):
    # Any: a malformed item is refused in its place, not with the whole batch; documented as what it must be.
    items: list[Any] = Field(
        min_length=1,
        description="each item is an AnalysisRequest (the body of submitAnalysis), checked on its own: a bad "
        "one is refused in its place",
    )


# --- answers ----------------------------------------------------------------------------------------------


class Progress(BaseModel):
    done: int = Field(ge=0)
    total: int = Field(ge=0)


class AnalysisProgress(Progress):
    phase: Literal["loading", "decoding", "encoding", "salience", "kl"] | None = Field(
        description="while running: loading the lens, or the phase of the batch under way"
    )
    partial: float = Field(ge=0, description="positions done, counting the running batch's finished share")
    eta_seconds: float | None = Field(
        description="while running: from the seconds per position measured on earlier jobs of this lens and "
        "option set, blended with this job's own speed; null when neither is known yet"
    )


class Candidate(Answer):
    explanation: str | None = None
    explanation_token_ids: list[int] | None = None
    mse: float | None = None
    chosen: bool | None = None


def row_model() -> type[Answer]:
    """The row schema, from the engine's declaration of a row (inference.rows.Row): names, types and
    descriptions; position, token, explanation and mse always, the rest where the row has them."""
    fields: dict[str, Any] = {}
    for spec in rows.ROW_FIELDS:
        annotation = list[Candidate] | None if spec.name == "candidates" else rows.ROW_TYPES[spec.name]
        bounds = {"ge": 0} if spec.name == "position" else {}
        default = ... if rows.required(spec.name) else None
        fields[spec.name] = (annotation, Field(default, description=rows.description(spec.name), **bounds))
    return create_model("AnalysisRow", __base__=Answer, __doc__=ROW_DOC, **fields)


ROW_DOC = """One analysed position, as the engine computes it. A Natural Language Autoencoder's rows (its lens'
kind is `nla`) add `mse_nrm`, `fve_nrm`, `av_text`, `av_stop` and `explanation_parsed`; their `mse` is the raw
mse, and `explanation_tokens` are the explanation's words (the units of `token_salience`). The fidelity fields
(`cosine_similarity`, `activation_norm`, `activation_norm_outlier`) are null in the rows of an analysis stored
before the engine computed them."""
AnalysisRow = row_model()


class AnalysisSubmitted(BaseModel):
    id: int
    status: Status
    queue_position: int | None = Field(ge=1)
    status_detail: str | None = Field(
        description="where the job stands, in words: its place in the queue, a lens no running worker serves "
        "(it waits for one), loading the lens (about how long), the running phase; null once it ended"
    )
    cached: bool = Field(description="true (with status done and 200) when served from a cache")
    url: str = Field(description="this analysis in JSON")
    html_url: str = Field(description="its results page in the browser")


class Analysis(BaseModel):
    id: int
    status: Status
    lens: str
    queue_position: int | None = Field(ge=1)
    status_detail: str | None = Field(
        description="where the job stands, in words: its place in the queue, a lens no running worker serves "
        "(it waits for one), loading the lens (about how long), the running phase; null once it ended"
    )
    progress: AnalysisProgress
    cancel_requested: bool
    input: dict[str, Any]
    options: dict[str, Any]
    rows: list[AnalysisRow] | None = Field(
        None, description="ordered by position; absent in lists and in the answer to DELETE"
    )
    metadata: dict[str, Any] = Field(description="the lens' metadata, once a worker has loaded it")
    error: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    url: str
    html_url: str


class AnalysisPage(BaseModel):
    items: list[Analysis] = Field(description="newest first, without rows")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


class BatchItemError(BaseModel):
    error: ErrorDetail


class BatchAnswer(BaseModel):
    items: list[AnalysisSubmitted | BatchItemError] = Field(description="one per item, in input order")


class Sample(Answer):
    text: str
    token_ids: list[int]
    finished: bool = Field(description="stopped at end-of-turn")


class GenerationResult(Answer):
    """While running: the samples so far and partial=true; when it ends: the whole result."""

    partial: bool | None = None
    prompt: str | None = None
    prompt_token_ids: list[int] | None = None
    samples: list[Sample]
    cancelled: bool | None = None
    options: dict[str, Any] | None = None


class ScoreRequest(Request):
    """Your own explanation of the activation at one position of the analysis' text: a text, or token ids
    (a row's own explanation_token_ids give that row's numbers again)."""

    position: int = Field(
        ge=-L.max_tokens, lt=L.max_tokens, description="a token of the text; negative counts from the end"
    )
    explanation: str | None = Field(None, min_length=1, max_length=L.max_text_chars)
    explanation_token_ids: list[Annotated[int, Field(ge=0, lt=2**31)]] | None = Field(
        None, min_length=1, max_length=L.max_new_tokens
    )


class ActivationsRequest(Request):
    positions: list[Annotated[int, Field(ge=-L.max_tokens, lt=L.max_tokens)]] = Field(
        min_length=1,
        max_length=L.max_chosen_positions,
        description="tokens of the text; negative from the end",
    )


class DescribeRequest(Request):
    """Vectors of your own (an SAE feature's direction, a difference of activations), each explained as if it
    were the lens' layer activation at a position: rows as an analysis has them, in order."""

    lens: str | None = Field(None, max_length=200, description="a lens id (default: the default lens)")
    vectors: list[list[float]] = Field(
        min_length=1, max_length=L.max_chosen_positions, description="each of the lens' width, finite"
    )
    token_ids: list[Annotated[int, Field(ge=0, lt=2**31)]] | None = Field(
        None,
        description="the token each vector's position held, where the lens' encoder reads it (else its null token)",
    )
    options: AnalysisOptions | None = None


class CompareSide(Request):
    """A position of one of your analyses (`analysis_id`, `position`), or a vector of your own (`vector`)."""

    analysis_id: int | None = Field(None, ge=1, lt=2**63)
    position: int | None = Field(None, ge=-L.max_tokens, lt=L.max_tokens)
    vector: list[float] | None = Field(None, min_length=1)


class CompareRequest(Request):
    """Explain a − b (two positions, of one analysis or two, or vectors) as if it were an activation."""

    a: CompareSide
    b: CompareSide
    lens: str | None = Field(None, max_length=200, description="for two vectors (else the analyses' lens)")
    options: AnalysisOptions | None = None


class Activations(BaseModel):
    positions: list[int] = Field(description="the positions, resolved")
    activations: list[list[float]] = Field(description="one vector per position: the lens' layer activation")


class ProbeResult(Answer):
    row: AnalysisRow | None = Field(
        None, description="a score: the row your explanation makes at its position"
    )
    delta_mse: float | None = Field(
        None, description="a score: its mse minus the lens' own row's (null: no row)"
    )
    positions: list[int] | None = Field(None, description="activations: the positions, resolved")
    activations: list[list[float]] | None = Field(
        None, description="activations: one vector per position, the lens' layer activation (float32)"
    )
    rows: list[AnalysisRow] | None = Field(None, description="describe: row i explains vector i (position i)")
    metadata: dict[str, Any] | None = Field(None, description="describe: the lens' and the options'")
    diff_norm: float | None = Field(None, description="compare: ‖a − b‖₂")
    norms: list[float] | None = Field(None, description="compare: ‖a‖₂ and ‖b‖₂")


class Probe(BaseModel):
    """A question to the lens about an analysis' text, answered by a worker: poll `url` until it is done."""

    id: int
    what: Literal["score", "activations", "describe", "compare"]
    status: Status
    lens: str
    analysis_id: int | None = Field(description="the analysis asked about (null for describe)")
    queue_position: int | None = Field(ge=1)
    status_detail: str | None = Field(
        description="where the job stands, in words: its place in the queue, a lens no running worker serves "
        "(it waits for one), loading the lens (about how long), the running phase; null once it ended"
    )
    request: dict[str, Any] = Field(description="what was asked, positions resolved")
    result: ProbeResult | None
    error: str | None
    created_at: datetime | None
    finished_at: datetime | None
    url: str


class Generation(BaseModel):
    id: int
    status: Status
    lens: str
    queue_position: int | None = Field(ge=1)
    status_detail: str | None = Field(
        description="where the job stands, in words: its place in the queue, a lens no running worker serves "
        "(it waits for one), loading the lens (about how long), the running phase; null once it ended"
    )
    progress: Progress = Field(description="decode steps (tokens) so far, of at most max_new_tokens")
    cancel_requested: bool
    input: dict[str, Any]
    options: dict[str, Any]
    result: GenerationResult | None
    error: str | None
    then_analyse: bool
    analysis_options: dict[str, Any] | None
    analysis_id: int | None = Field(
        description="with then_analyse: the analysis that follows, once the generation is done"
    )
    analysis_url: str | None
    analysis_html_url: str | None
    analysis_error: str | None = Field(
        description="with then_analyse: why the analysis could not be queued (a daily cap, say)"
    )
    timings: dict[str, Any]
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    url: str
    html_url: str


class Lens(BaseModel):
    id: str
    name: str
    description: str
    default: bool
    untrained: bool = Field(description="an untrained, Patchscope-style lens (the demo)")
    kind: Literal["lens", "nla"] = Field(
        description="`lens`: a Consistency Lens (rows carry mse, relative_rmse, kl); `nla`: a Natural Language "
        "Autoencoder, a verbaliser and a reconstructor (rows add mse_nrm, cosine_similarity, fve_nrm)"
    )
    base_model: str | None = Field(
        description="the model it explains, by name (lenses sharing one share its weights' group); null until a "
        "worker has loaded the lens"
    )
    layer: int | None = Field(description="the layer it reads; null until a worker has loaded the lens")
    t_text: int | None = Field(
        description="T, its explanations' length in tokens; null until loaded (or NLA)"
    )


class LensList(BaseModel):
    lenses: list[Lens]


class LensStatus(BaseModel):
    id: str
    name: str
    state: Literal["loaded", "loading", "cached", "cold", "unserved"] = Field(
        description="`loaded`: a live worker holds it on its device; `loading`: one is loading it; `cached`: "
        "one keeps it in CPU memory, so the next job takes it from there (faster than from disk); `cold`: live "
        "workers serve it but none holds it, so the next job loads it first (about `load_seconds`); "
        "`unserved`: no live worker serves it, so its jobs wait"
    )
    workers: int = Field(description="live workers that serve this lens")
    queued: int = Field(description="jobs waiting for this lens")
    load_seconds: float | None = Field(description="its last measured load time; null before the first load")
    loading_left_seconds: float | None = Field(description="while loading: about how many seconds are left")


class ServerStatus(BaseModel):
    workers_online: int = Field(description="workers whose heartbeat is fresher than LENSWEB_STALE_AFTER")
    queued: int = Field(description="jobs (analyses and generations) waiting in the queue")
    lenses: list[LensStatus]
