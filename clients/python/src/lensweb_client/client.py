"""`Client`: the HTTP side (Bearer key, JSON, errors, retries, rate-limit headers) and one method per
endpoint of the lensweb JSON API v1."""

from __future__ import annotations

import builtins
import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from ._version import __version__
from .errors import (
    ApiError,
    ConnectionFailed,
    Headers,
    RateLimited,
    Unavailable,
    error_from_response,
    make_error,
)
from .jobs import Analysis, Generation, Job, Probe

BATCH_LIMIT = 100  # the batch endpoint's most items per request
PAGE_LIMIT = 100  # GET analyses' largest `limit`

# "research.json": an analysis in the research site's shape ("[token]" after explanations, -1.0 for KL not computed)
ExportFormat = Literal["json", "csv", "research.json"]
JobKind = Literal["analysis", "generation"]


@dataclass(frozen=True)
class Lens:
    id: str
    name: str
    description: str
    default: bool
    untrained: bool
    kind: str  # "lens" (a Consistency Lens) or "nla" (a Natural Language Autoencoder)
    # the model it explains, the layer it reads and T: None until a worker has loaded the lens
    base_model: str | None = None
    layer: int | None = None
    t_text: int | None = None


@dataclass(frozen=True)
class LensStatus:
    id: str
    name: str
    # "loaded", "loading", "cached" (in a worker's CPU memory), "cold" (the next job loads it first) or
    # "unserved" (no live worker)
    state: str
    workers: int
    queued: int
    load_seconds: float | None  # its last measured load time
    loading_left_seconds: float | None


@dataclass(frozen=True)
class Status:
    workers_online: int
    queued: int
    lenses: list[LensStatus]

    def lens(self, lens_id: str) -> LensStatus | None:
        return next((lens for lens in self.lenses if lens.id == lens_id), None)


class _Secret:
    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<hidden>"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """The API never redirects; following one would send the Bearer key to wherever it points."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None  # urllib then raises the 3xx as an HTTPError


class Client:
    """A lensweb account's API key and the server it belongs to.

    Refusals raise ApiError subclasses. 429 and 503 answers are retried after their Retry-After (at most
    `max_retries` retries, each wait at most `max_retry_wait` seconds: a longer Retry-After, e.g. a daily
    quota, is raised at once); a broken connection is retried for GET requests only."""

    max_retry_wait: float = 60.0
    #: Called with seconds between retries and polls; tests replace it so as not to wait.
    sleep: Callable[[float], None]

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30, max_retries: int = 5) -> None:
        if not api_key:
            raise ValueError("an API key is needed (create one on your lensweb settings page)")
        root = base_url.rstrip("/").removesuffix("/api/v1")  # the site's root or the API's, either will do
        self.base_url = root
        self.api_url = f"{root}/api/v1/"
        self.timeout = timeout
        self.max_retries = max_retries
        self.sleep = time.sleep
        #: The last X-RateLimit-Remaining: API requests left this minute (None: none answered yet).
        self.last_rate_limit: int | None = None
        #: The last X-Quota-Positions-Remaining: positions left today (None: never sent, no daily quota).
        self.last_quota_remaining: int | None = None
        self._key = _Secret(api_key)  # hidden from repr and vars(): keep the key out of logs and tracebacks
        self._opener = urllib.request.build_opener(_NoRedirects)

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    # --- analyses -------------------------------------------------------------------------------------

    def analyze(
        self,
        text: str | None = None,
        *,
        messages: list[dict[str, str]] | None = None,
        lens: str | None = None,
        default_system_prompt: bool | None = None,
        **options: Any,
    ) -> Analysis:
        """Submit an analysis of `text` or of a chat (`messages`: [{"role", "content"}, …]). Keyword
        options (best_of_k, temperature, seed, salience, kl, logit_lens, keep_candidates, last_n_messages)
        go into the body's "options". A cached result comes back already done."""
        body = submission(text, messages, lens, default_system_prompt, options)
        return Analysis(self, self._json("POST", "analyses", body=body))

    def analyze_many(self, items: list[dict[str, Any]]) -> list[Analysis | ApiError]:
        """Submit many analyses through the batch endpoint (`items`: POST analyses bodies), 100 per request.
        The answer is in input order; a refused item is its ApiError, returned, not raised."""
        results: list[Analysis | ApiError] = []
        for start in range(0, len(items), BATCH_LIMIT):
            chunk = items[start : start + BATCH_LIMIT]
            answer = self._json("POST", "analyses/batch", body={"items": chunk})
            answered = answer.get("items") or []
            if len(answered) != len(chunk):
                raise ApiError(
                    200, "invalid_response", f"the batch answered {len(answered)} items for {len(chunk)}"
                )
            for item in answered:
                if "error" in item:
                    status = item.get("status")  # an HTTP status, if the server says one
                    results.append(make_error(status if isinstance(status, int) else None, item["error"]))
                else:
                    results.append(Analysis(self, item))
        return results

    def analysis(self, id: int) -> Analysis:
        """The analysis with this id, its rows included."""
        return Analysis(self, self._json("GET", f"analyses/{int(id)}"))

    def list(
        self,
        *,
        status: str | None = None,
        lens: str | None = None,
        q: str | None = None,
        created_after: datetime | date | str | None = None,
        created_before: datetime | date | str | None = None,
        limit: int | None = None,
        page_size: int = 50,
    ) -> Iterator[Analysis]:
        """Your analyses, newest first, page after page (`limit`: stop after that many). Their rows are
        fetched when `.rows` is first read."""
        query: dict[str, str] = {}
        for name, value in (("status", status), ("lens", lens), ("q", q)):
            if value is not None:
                query[name] = value
        for name, when in (("created_after", created_after), ("created_before", created_before)):
            if when is not None:
                query[name] = when if isinstance(when, str) else when.isoformat()
        yielded = 0
        cursor: str | None = None
        while limit is None or yielded < limit:
            wanted = page_size if limit is None else min(page_size, limit - yielded)
            page = {**query, "limit": str(max(1, min(wanted, PAGE_LIMIT)))}
            if cursor is not None:
                page["cursor"] = cursor
            answer = self._json("GET", "analyses", query=page)
            for item in answer.get("items") or []:
                yield Analysis(self, item)
                yielded += 1
                if limit is not None and yielded >= limit:
                    return
            cursor = answer.get("next_cursor")
            if not cursor:
                return

    # --- generations ----------------------------------------------------------------------------------

    def generate(
        self,
        text: str | None = None,
        *,
        messages: builtins.list[dict[str, str]] | None = None,  # builtins: `list` is a method here
        lens: str | None = None,
        default_system_prompt: bool | None = None,
        then_analyse: bool = False,
        analysis_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> Generation:
        """Submit a generation (options: n, max_new_tokens, temperature, top_p, seed, chat_reply); an option
        left out takes the server's default (temperature: a chat reply's, with chat_reply=True or `messages`,
        else a continuation's). `then_analyse=True` analyses the first sample when it is done, with
        `analysis_options`."""
        body = submission(text, messages, lens, default_system_prompt, options)
        if then_analyse:
            body["then_analyse"] = True
            if analysis_options is not None:
                body["analysis_options"] = analysis_options
        elif analysis_options is not None:
            raise ValueError("analysis_options goes with then_analyse=True")
        return Generation(self, self._json("POST", "generations", body=body))

    def generation(self, id: int) -> Generation:
        return Generation(self, self._json("GET", f"generations/{int(id)}"))

    # --- probes: your own explanation scored, activations read ------------------------------------------

    def score(
        self,
        analysis: int | Analysis,
        position: int,
        explanation: str | None = None,
        *,
        explanation_token_ids: builtins.list[int] | None = None,
    ) -> Probe:
        """Queue a score of your own explanation (a text, or token ids) at `position` of an analysis' text;
        `.wait()` for its `.row` and `.delta_mse`."""
        body: dict[str, Any] = {"position": position}
        if explanation is not None:
            body["explanation"] = explanation
        if explanation_token_ids is not None:
            body["explanation_token_ids"] = list(explanation_token_ids)
        return Probe(self, self._json("POST", f"analyses/{_id(analysis)}/scores", body=body))

    def activations(self, analysis: int | Analysis, positions: builtins.list[int]) -> Probe:
        """Queue a read of the lens' layer activations at `positions`; `.wait()` for `.activations`."""
        body = {"positions": list(positions)}
        return Probe(self, self._json("POST", f"analyses/{_id(analysis)}/activations", body=body))

    def describe(
        self,
        vectors: builtins.list[builtins.list[float]],
        *,
        lens: str | None = None,
        token_ids: builtins.list[int] | None = None,
        **options: Any,
    ) -> Probe:
        """Queue the description of vectors of your own (an SAE feature's direction, a difference of
        activations), each as if it were the lens' activation at a position; `.wait()` for `.rows`."""
        body: dict[str, Any] = {"vectors": [list(v) for v in vectors]}
        if lens is not None:
            body["lens"] = lens
        if token_ids is not None:
            body["token_ids"] = list(token_ids)
        if options:
            body["options"] = options
        return Probe(self, self._json("POST", "describe", body=body))

    def compare(
        self, a: dict[str, Any], b: dict[str, Any], *, lens: str | None = None, **options: Any
    ) -> Probe:
        """Queue the explanation of a − b; each side `{"analysis_id": …, "position": …}` or `{"vector": […]}`.
        `.wait()` for `.row` and `.diff_norm`."""
        body: dict[str, Any] = {"a": dict(a), "b": dict(b)}
        if lens is not None:
            body["lens"] = lens
        if options:
            body["options"] = options
        return Probe(self, self._json("POST", "compare", body=body))

    def probe(self, id: int) -> Probe:
        return Probe(self, self._json("GET", f"probes/{int(id)}"))

    # --- the rest ---------------------------------------------------------------------------------------

    def status(self) -> Status:
        """Workers online, the queue's length and each lens' state: is a first job going to load a model?"""
        answer = self._json("GET", "status")
        return Status(
            workers_online=int(answer["workers_online"]),
            queued=int(answer["queued"]),
            lenses=[
                LensStatus(
                    id=item["id"],
                    name=item.get("name", item["id"]),
                    state=item["state"],
                    workers=int(item.get("workers") or 0),
                    queued=int(item.get("queued") or 0),
                    load_seconds=item.get("load_seconds"),
                    loading_left_seconds=item.get("loading_left_seconds"),
                )
                for item in answer.get("lenses") or []
            ],
        )

    def lenses(self) -> builtins.list[Lens]:
        answer = self._json("GET", "lenses")
        return [
            Lens(
                id=item["id"],
                name=item.get("name", item["id"]),
                description=item.get("description") or "",
                default=bool(item.get("default")),
                untrained=bool(item.get("untrained")),
                kind=item.get("kind") or "lens",
                base_model=item.get("base_model"),
                layer=item.get("layer"),
                t_text=item.get("t_text"),
            )
            for item in answer.get("lenses") or []
        ]

    def export(
        self,
        job_or_id: Job | int,
        format: ExportFormat = "json",
        *,
        kind: JobKind = "analysis",
    ) -> bytes:
        """The job's export file, the bytes the browser's download gives. A Generation object needs no
        `kind`. "research.json" (analyses only): the research site's file shape."""
        if format not in ("json", "csv", "research.json"):
            raise ValueError(f"format is 'json', 'csv' or 'research.json', not {format!r}")
        if isinstance(job_or_id, Generation):
            kind = "generation"
        elif isinstance(job_or_id, Analysis):
            kind = "analysis"
        elif kind not in ("analysis", "generation"):
            raise ValueError(f"kind is 'analysis' or 'generation', not {kind!r}")
        if kind == "generation" and format == "research.json":
            raise ValueError("a generation has no research-shape file; its formats are 'json' and 'csv'")
        job_id = job_or_id.id if isinstance(job_or_id, Job) else int(job_or_id)
        collection = "generations" if kind == "generation" else "analyses"
        return self._request("GET", f"{collection}/{job_id}/export.{format}", accept="*/*")

    # --- HTTP -------------------------------------------------------------------------------------------

    def _json(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        raw = self._request(method, path, body=body, query=query)
        try:
            answer = json.loads(raw)
        except ValueError:
            raise ApiError(200, "invalid_response", f"{method} {path} did not answer JSON") from None
        if not isinstance(answer, dict):
            raise ApiError(200, "invalid_response", f"{method} {path} did not answer a JSON object")
        return answer

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        accept: str = "application/json",
    ) -> bytes:
        """The answer's body, read whole; the read is inside the retry, so a GET cut off midway is retried."""
        result: bytes = self._send(method, path, body=body, query=query, accept=accept, read=True)
        return result

    def _open_stream(self, path: str, headers: Mapping[str, str], timeout: float) -> http.client.HTTPResponse:
        """An open GET answer to read from (Server-Sent Events), its status a success."""
        response: http.client.HTTPResponse = self._send(
            "GET", path, accept="text/event-stream", headers=headers, timeout=timeout, read=False
        )
        return response

    def _send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        accept: str,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        read: bool,
    ) -> Any:
        url = self.api_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        sent = {
            "Authorization": f"Bearer {self._key.value}",
            "Accept": accept,
            "User-Agent": f"lensweb-client/{__version__}",
            **(headers or {}),
        }
        if data is not None:
            sent["Content-Type"] = "application/json"
        retries = 0
        while True:
            request = urllib.request.Request(url, data=data, headers=sent, method=method)
            try:
                response = self._opener.open(request, timeout=self.timeout if timeout is None else timeout)
                self._note_limits(response.headers)
                if not read:
                    return response
                with response:
                    return response.read()
            except urllib.error.HTTPError as answer:
                with answer:
                    payload = answer.read()
                self._note_limits(answer.headers)
                error = error_from_response(answer.code, payload, answer.headers)
                wait = self._retry_wait(error, retries)
                if wait is None:
                    raise error from None
            except (OSError, http.client.HTTPException) as exc:
                # Refused, reset, timed out or cut off: a GET may be sent again, a POST might have landed.
                if method != "GET" or retries >= self.max_retries:
                    reason = getattr(exc, "reason", exc)
                    landed = "" if method == "GET" else " (not retried: the server may have received it)"
                    raise ConnectionFailed(f"{method} {url} failed: {reason}{landed}") from exc
                wait = self._backoff(retries)
            retries += 1
            self.sleep(wait)

    def _retry_wait(self, error: ApiError, retries: int) -> float | None:
        """Seconds to wait before trying again, or None to raise `error` now."""
        if not isinstance(error, (RateLimited, Unavailable)) or retries >= self.max_retries:
            return None
        if error.retry_after is None:
            return self._backoff(retries)
        if error.retry_after > self.max_retry_wait:
            return None  # e.g. a daily quota: the caller decides, rather than a call blocking for hours
        return float(error.retry_after)

    def _backoff(self, retries: int) -> float:
        """Without a Retry-After: 0.5 s, 1 s, 2 s, … up to the cap."""
        return min(self.max_retry_wait, 0.5 * 2.0**retries)

    def _note_limits(self, headers: Headers) -> None:
        # Each only when sent: an unauthenticated answer has neither, an event stream no quota header.
        remaining = _int_or_none(headers.get("X-RateLimit-Remaining"))
        if remaining is not None:
            self.last_rate_limit = remaining
        quota = _int_or_none(headers.get("X-Quota-Positions-Remaining"))
        if quota is not None:
            self.last_quota_remaining = quota


def submission(
    text: str | None,
    messages: list[dict[str, str]] | None,
    lens: str | None,
    default_system_prompt: bool | None,
    options: dict[str, Any],
) -> dict[str, Any]:
    """The POST body for analyses and generations."""
    if (text is None) == (messages is None):
        raise ValueError("give either text or messages, not both or neither")
    body: dict[str, Any] = {"text": text} if text is not None else {"messages": messages}
    if lens is not None:
        body["lens"] = lens
    if default_system_prompt is not None:
        body["default_system_prompt"] = default_system_prompt
    if options:
        body["options"] = options
    return body


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _id(job: int | Analysis) -> int:
    return job.id if isinstance(job, Analysis) else int(job)
