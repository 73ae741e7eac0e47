"""The job objects: `Analysis` (rows, a live event stream, waiting with a progress bar, pandas) and
`Generation` (samples, the follow-up analysis, waiting by polling). Each holds the last JSON the server
sent about it in `.data` and updates itself from every answer."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from .errors import ConnectionFailed, JobCancelled, JobFailed
from .sse import Event, EventStreamParser, MessageEvent, parse_events

if TYPE_CHECKING:
    import pandas

    from .client import Client

FINAL_STATUSES = frozenset({"done", "failed", "cancelled"})
DEFAULT_RECONNECT_DELAY = 1.0  # seconds, when the server sent no `retry:` of its own
# A stream is silent between keep-alives (15 s on lensweb): its reads wait at least this long, whatever the
# client's timeout for ordinary requests.
STREAM_READ_TIMEOUT = 60.0
CHUNK = 65536


class Job:
    """What analyses and generations share: id, status, refresh, cancel, export, the raise on a bad end."""

    _collection: ClassVar[str]
    _noun: ClassVar[str]

    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        self._client = client
        self.data: dict[str, Any] = {}
        self._update(data)

    def _update(self, data: dict[str, Any]) -> None:
        # Partial answers (a submission, a status event) keep what earlier ones said about other fields.
        self.data.update(data)

    @property
    def id(self) -> int:
        return int(self.data["id"])

    @property
    def status(self) -> str:
        return str(self.data.get("status") or "")

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def error(self) -> str | None:
        return self.data.get("error") or None

    @property
    def url(self) -> str:
        return str(self.data.get("url") or f"{self._client.api_url}{self._path}")

    @property
    def progress(self) -> tuple[int, int]:
        """(done, total) positions (tokens)."""
        progress = self.data.get("progress") or {}
        return int(progress.get("done") or 0), int(progress.get("total") or 0)

    @property
    def _path(self) -> str:
        return f"{self._collection}/{self.id}"

    def refresh(self) -> Job:
        self._update(self._client._json("GET", self._path))
        return self

    def cancel(self) -> Job:
        """Ask the server to cancel the job (owner only); a final job stays as it is."""
        self._update(self._client._json("DELETE", self._path))
        return self

    def export(self, format: Literal["json", "csv", "research.json"] = "json") -> bytes:
        return self._client.export(self, format)

    def _poll(self, timeout: float | None, poll: float, bar_unit: str | None = None) -> None:
        """Refresh every `poll` seconds until final; then raise unless done (TimeoutError after `timeout`).
        `bar_unit`: draw a tqdm bar over the job's progress, counted in that unit."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        if bar_unit and not self.is_final:
            from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]

            done, total = self.progress
            bar = tqdm(total=total or None, initial=done, unit=bar_unit, desc=f"{self._noun} {self.id}")
        try:
            while not self.is_final:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"{self._noun} {self.id} is still {self.status} after {timeout} s")
                delay = poll if deadline is None else min(poll, max(0.0, deadline - time.monotonic()))
                self._client.sleep(delay)
                self.refresh()
                if bar is not None:
                    done, total = self.progress
                    bar.total = total or bar.total
                    bar.update(done - bar.n)
                    bar.set_postfix_str(self.status, refresh=True)
        finally:
            if bar is not None:
                bar.close()
        self._raise_unless_done()

    def _raise_unless_done(self) -> None:
        if self.status == "failed":
            raise JobFailed(self, f"{self._noun} {self.id} failed: {self.error or 'no reason given'}")
        if self.status == "cancelled":
            raise JobCancelled(self, f"{self._noun} {self.id} was cancelled")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.data.get('id')} {self.status}>"


class Analysis(Job):
    """One analysis. `.rows` are fetched on first use and grow as `refresh()`, `stream()` or `wait()`
    bring more; `.data` is the last JSON about it, without the rows."""

    _collection = "analyses"
    _noun = "analysis"

    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        self._rows: list[dict[str, Any]] | None = None  # None: never fetched
        self._last_position: int | None = None
        super().__init__(client, data)

    def _update(self, data: dict[str, Any]) -> None:
        data = dict(data)
        rows = data.pop("rows", None)
        super()._update(data)
        if rows is not None:
            self._add_rows(rows)

    def _add_rows(self, rows: list[dict[str, Any]]) -> None:
        """Rows arrive in position order; any at or before the last one held (a resent batch) are skipped."""
        if self._rows is None:
            self._rows = []
        for row in rows:
            position = int(row["position"])
            if self._last_position is None or position > self._last_position:
                self._rows.append(row)
                self._last_position = position

    @property
    def html_url(self) -> str:
        """The results page (a browser session of the same account opens it)."""
        return str(self.data.get("html_url") or f"{self._client.base_url}/analyses/{self.id}/")

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The rows held so far (one per position); the first read fetches them."""
        if self._rows is None:
            self.refresh()
        return self._rows if self._rows is not None else []

    def refresh(self) -> Analysis:
        """The latest state; only the rows after those already held are fetched."""
        query = None if self._last_position is None else {"after": str(self._last_position)}
        answer = self._client._json("GET", self._path, query=query)
        answer.setdefault("rows", [])
        self._update(answer)
        return self

    def cancel(self) -> Analysis:
        super().cancel()
        return self

    def stream(self) -> Iterator[Event]:
        """The job's Server-Sent Events (`status`, `rows`, then `done`, `failed` or `cancelled`), applied to
        this object as they come (rows into `.rows`). A dropped connection, or one the server closes before
        the final event, is resumed with Last-Event-ID: no row is missed or repeated."""
        return self._events(deadline=None)

    def wait(self, progress: bool = False, timeout: float | None = None) -> Analysis:
        """Follow the stream until the job is final; `progress=True` draws a tqdm bar over positions.
        Raises JobFailed or JobCancelled if it did not end done, TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.is_final:
            bar = None
            if progress:
                from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]

                done, total = self.progress
                bar = tqdm(total=total or None, initial=done, unit="pos", desc=f"analysis {self.id}")
            try:
                for _event in self._events(deadline):
                    if bar is not None:
                        done, total = self.progress
                        bar.total = total or bar.total
                        bar.update(max(done, len(self._rows or ())) - bar.n)
                        bar.set_postfix_str(self.status, refresh=True)
            finally:
                if bar is not None:
                    bar.close()
        self._raise_unless_done()
        return self

    def to_pandas(self) -> pandas.DataFrame:
        """The rows held (fetched if none yet) as a DataFrame, one row per position; list-valued columns
        (explanation tokens, candidates, …) stay lists. Needs `pip install 'lensweb-client[pandas]'`."""
        try:
            import pandas
        except ImportError as exc:
            raise ImportError("to_pandas() needs pandas: pip install 'lensweb-client[pandas]'") from exc
        frame: pandas.DataFrame = pandas.DataFrame.from_records(
            self.rows, columns=None if self.rows else ["position"]
        )
        return frame

    # --- the event stream ---------------------------------------------------------------------------------

    def _events(self, deadline: float | None) -> Iterator[Event]:
        client = self._client
        failures = 0  # consecutive connections that broke, or closed before sending a byte
        reconnect_delay = DEFAULT_RECONNECT_DELAY  # the server's `retry:` replaces it, for later connections
        while True:
            headers = {} if self._last_position is None else {"Last-Event-ID": str(self._last_position)}
            response = client._open_stream(f"{self._path}/events", headers, self._read_timeout(deadline))
            parser = EventStreamParser()
            reader = _Reader(response, deadline, self)
            got_event = False
            broke: BaseException | None = None
            try:
                for message in parse_events(reader, parser):
                    got_event = True
                    event = self._apply(message)
                    yield event
                    if event.event in FINAL_STATUSES:
                        return
            except (OSError, http.client.HTTPException) as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    raise self._timeout() from None
                broke = exc
            finally:
                response.close()
            if parser.retry is not None:
                reconnect_delay = parser.retry / 1000
            # A server that closes after its time bound has sent something (events or keep-alives); one
            # that breaks the connection or closes it empty is failing, and is given up on at some point.
            if broke is not None or not reader.received:
                failures += 1
                if failures > client.max_retries:
                    raise ConnectionFailed(
                        f"the event stream of {self._noun} {self.id} keeps breaking: {broke or 'no data'}"
                    ) from broke
            else:
                failures = 0
            if not got_event:  # resume at once after progress; otherwise give the server a moment
                delay = reconnect_delay
                if deadline is not None:
                    delay = min(delay, max(0.0, deadline - time.monotonic()))
                client.sleep(delay)
            if deadline is not None and time.monotonic() >= deadline:
                raise self._timeout()

    def _apply(self, message: MessageEvent) -> Event:
        try:
            decoded = json.loads(message.data)
        except ValueError:
            decoded = message.data
        data: dict[str, Any] = decoded if isinstance(decoded, dict) else {"value": decoded}
        if message.event == "rows":
            self._add_rows(data.get("rows") or [])
        elif message.event == "status":
            self._update(data)
        elif message.event in FINAL_STATUSES:
            self._update({"status": message.event, **data})
        return Event(event=message.event, data=data, id=message.id)

    def _read_timeout(self, deadline: float | None) -> float:
        wait = max(self._client.timeout, STREAM_READ_TIMEOUT)
        return wait if deadline is None else max(0.05, min(wait, deadline - time.monotonic()))

    def _timeout(self) -> TimeoutError:
        return TimeoutError(f"{self._noun} {self.id} is still {self.status or 'not final'} at the deadline")


class _Reader:
    """The response's bytes as soon as they arrive (read1: no waiting for a full buffer), stopping at the
    deadline; `received` says whether anything came at all."""

    def __init__(self, response: http.client.HTTPResponse, deadline: float | None, job: Analysis) -> None:
        self._response, self._deadline, self._job = response, deadline, job
        self.received = False

    def __iter__(self) -> Iterator[bytes]:
        while True:
            if self._deadline is not None and time.monotonic() >= self._deadline:
                raise self._job._timeout()
            chunk = self._response.read1(CHUNK)
            if not chunk:
                return
            self.received = True
            yield chunk


class Generation(Job):
    """One generation: `.samples` are its texts once done; `.analysis()` the follow-up analysis of a
    `then_analyse` generation."""

    _collection = "generations"
    _noun = "generation"

    @property
    def html_url(self) -> str | None:
        value = self.data.get("html_url")
        return str(value) if value else None

    @property
    def result(self) -> dict[str, Any] | None:
        return self.data.get("result")

    @property
    def samples(self) -> list[str]:
        result = self.result or {}
        return [str(sample.get("text", "")) for sample in result.get("samples") or []]

    @property
    def analysis_id(self) -> int | None:
        value = self.data.get("analysis_id")
        return None if value is None else int(value)

    def analysis(self) -> Analysis | None:
        """The follow-up analysis (then_analyse), or None if there is none (yet)."""
        return None if self.analysis_id is None else self._client.analysis(self.analysis_id)

    def refresh(self) -> Generation:
        super().refresh()
        return self

    def cancel(self) -> Generation:
        super().cancel()
        return self

    def wait(self, progress: bool = False, timeout: float | None = None, poll: float = 0.5) -> Generation:
        """Poll every `poll` seconds until the generation is final; `progress=True` draws a tqdm bar over its
        tokens, as Analysis.wait does over positions. Raises JobFailed or JobCancelled if it did not end done,
        TimeoutError after `timeout` seconds."""
        self._poll(timeout, poll, "tok" if progress else None)
        return self


class Probe(Job):
    """A score of your own explanation, or an activations read, of an analysis: `.wait()`, then `.row` and
    `.delta_mse` (a score) or `.activations` (one vector per position)."""

    _collection = "probes"
    _noun = "probe"

    @property
    def result(self) -> dict[str, Any]:
        return self.data.get("result") or {}

    @property
    def row(self) -> dict[str, Any] | None:
        """A score: the row your explanation makes at its position (mse, relative_rmse, token_salience, …)."""
        return self.result.get("row")

    @property
    def delta_mse(self) -> float | None:
        """A score: its mse minus the lens' own row's."""
        return self.result.get("delta_mse")

    @property
    def activations(self) -> list[list[float]] | None:
        return self.result.get("activations")

    @property
    def diff_norm(self) -> float | None:
        """A comparison: ‖a − b‖."""
        return self.result.get("diff_norm")

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Described vectors: row i explains vector i."""
        return list(self.result.get("rows") or [])

    def refresh(self) -> Probe:
        super().refresh()
        return self

    def cancel(self) -> Probe:
        raise TypeError("a probe is one pass: it cannot be cancelled")

    def wait(self, timeout: float | None = None, poll: float = 0.2) -> Probe:
        """Poll until answered. Raises JobFailed (with the engine's reason) or TimeoutError."""
        self._poll(timeout, poll)
        return self
