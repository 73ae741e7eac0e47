"""Fill the result cache ahead of a demo: `manage.py warm_cache inputs.txt [--lens ID] [--options JSON]
[--workers N] [--local]`.

FILE: one text per line, or one JSON object per line ({"text"|"messages", "options", "lens"}), mixed as
you like, or a JSON list of texts and such objects. What is cached already is skipped; a malformed line is
reported with its number and the rest still runs.

Through the queue (default): jobs owned by the service user `cache-warmer`, N in flight at a time, computed
by the running workers (per-user caps and daily quota do not apply to it). `--local`: computed here, the
lens loaded in this process; no worker needed.

Ctrl-C: stops submitting, cancels this run's jobs still waiting in the queue and leaves the running ones to
finish (they are stored when they do). Run the same command again to resume: it skips what is cached.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from lensweb.analyses import services
from lensweb.analyses.engine import get_engine
from lensweb.analyses.models import Analysis
from lensweb.cache import services as result_cache
from lensweb.cache.warming import Progress, clock, read_items


class Command(BaseCommand):
    help = "Compute and cache the results of a file of inputs (skipping what is cached)."

    def add_arguments(self, parser):
        parser.add_argument("file", help="text (one input per line), JSONL, or a JSON list")
        parser.add_argument("--lens", help="lens id for inputs that name none (default: the default lens)")
        parser.add_argument(
            "--options", default="{}", help="options for every input, e.g. '{\"best_of_k\": 4}'"
        )
        parser.add_argument(
            "--workers", type=int, default=None, help="jobs in flight (default: live workers)"
        )
        parser.add_argument("--local", action="store_true", help="compute in this process, not the queue")
        parser.add_argument("--poll", type=float, default=0.5, help="seconds between looks at the jobs")

    def handle(self, *args, **opts):
        started = time.monotonic()
        path = Path(opts["file"])
        try:
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {path}: {exc}") from None
        try:
            base_options = json.loads(opts["options"])
        except ValueError as exc:
            raise CommandError(f"--options is not valid JSON: {exc}") from None
        if not isinstance(base_options, dict):
            raise CommandError("--options must be a JSON object, e.g. '{\"best_of_k\": 4}'")
        items, bad = read_items(content)
        self.failed = [f"{where}: {why}" for where, why in bad]
        for message in self.failed:
            self.stderr.write(f"malformed {message}")
        self.computed = self.skipped = 0
        todo = self._to_compute(items, opts["lens"], base_options)
        self.stdout.write(
            f"{len(items) + len(bad)} inputs: {self.skipped} cached already, {len(todo)} to compute"
        )
        interrupted = False
        if todo:
            bar = Progress(self.stderr._out, len(todo))  # the raw stream: the bar redraws with "\r"
            bar.draw()
            try:
                if opts["local"]:
                    self._compute_here(todo, bar)
                else:
                    self._compute_in_queue(todo, bar, opts["workers"], opts["poll"])
            except KeyboardInterrupt:
                interrupted = True
            bar.close()
        self.stdout.write(
            f"{'interrupted: ' if interrupted else ''}{self.computed} computed, {self.skipped} skipped (cached), "
            f"{len(self.failed)} failed, in {clock(time.monotonic() - started)}"
            + (" (run again to resume)" if interrupted else "")
        )
        if self.failed:
            raise CommandError(f"{len(self.failed)} input(s) failed: " + "; ".join(self.failed[:5]))

    def _to_compute(self, items, lens, base_options) -> list[tuple]:
        todo = []
        for item in items:
            try:
                spec, inp, options, prepared = services.check_prepared_submission(
                    item.lens or lens, item.input, {**base_options, **item.options}
                )
            except services.SubmissionError as exc:
                self._fail(None, f"{item.where}: {exc.message}")
                continue
            key = result_cache.key_for(spec, prepared, options)
            if not settings.LENSWEB_RESULT_CACHE:
                raise CommandError("the result cache is off (LENSWEB_RESULT_CACHE=false): nothing to warm")
            if key is None:
                raise CommandError(f"lens {spec.id} has no identity to key its results by (see the log)")
            if result_cache.peek(key):
                self.skipped += 1
            else:
                todo.append((item, spec, inp, options, prepared, key))
        return todo

    def _fail(self, bar, message: str) -> None:
        self.failed.append(message)
        if bar is None:
            self.stderr.write(f"failed {message}")
        else:
            bar.failed += 1
            bar.say(f"failed {message}")

    # --- in this process --------------------------------------------------------------------------------

    def _compute_here(self, todo, bar: Progress) -> None:
        engine, limits, loaded = get_engine(), services.limits(), {}
        for item, spec, inp, options, prepared, key in todo:
            if spec.id not in loaded:
                loaded.clear()  # one lens in memory at a time
                bar.say(f"loading lens {spec.id}…")
                loaded[spec.id] = engine.load(spec)
            lens = loaded[spec.id]
            identity, _, device, dtype = result_cache.computed_by(engine.metadata(lens))
            if (identity, device, dtype) != (key.lens_identity, key.device, key.dtype):
                # its files changed since the key was made, or this process runs it on another device
                key = result_cache.make_key(identity, device, dtype, prepared, options)
            t0 = time.monotonic()

            def on_batch(update):
                bar.fraction = update.done / update.total if update.total else 0.0
                if bar.tty:  # a line per batch would flood a log
                    bar.draw()
                return True

            try:
                result = engine.analyze(lens, inp, options, on_batch=on_batch, limits=limits)
            except Exception as exc:  # one input's failure must not stop the rest
                bar.fraction = 0.0
                self._fail(bar, f"{item.where}: {type(exc).__name__}: {exc}")
                continue
            bar.fraction = 0.0
            if result.status != "done" or len(result.rows) != len(prepared.positions):
                self._fail(bar, f"{item.where}: the engine stopped ({result.status})")
                continue
            result_cache.store_computed(
                key,
                spec.id,
                options,
                result.to_dict()["rows"],  # stored as JSON
                engine.metadata(lens, prepared),
                result.timings,
                time.monotonic() - t0,
            )
            self.computed += 1
            bar.computed += 1
            bar.draw()

    # --- through the queue ---------------------------------------------------------------------------------

    def _compute_in_queue(self, todo, bar: Progress, workers: int | None, poll: float) -> None:
        live = services.live_workers().count()
        if not live:
            raise CommandError(
                "no worker is running: start one (manage.py runworker or serve), or use --local"
            )
        in_flight_max = max(1, workers or live)
        user = result_cache.warmer_user()
        pending, in_flight = list(todo), {}
        try:
            while pending or in_flight:
                while pending and len(in_flight) < in_flight_max:
                    item, spec, _inp, options, *_ = pending.pop(0)
                    try:
                        job = services.do_submit(user, spec.id, item.input, options.to_dict(), limited=False)
                    except services.SubmissionError as exc:
                        self._fail(bar, f"{item.where}: {exc.message}")
                        continue
                    if job.status == Analysis.Status.DONE:  # cached meanwhile
                        self.skipped += 1
                        bar.total -= 1
                        bar.draw()
                    else:
                        in_flight[job.pk] = item
                time.sleep(poll)
                final = Analysis.objects.filter(pk__in=in_flight, status__in=Analysis.FINAL)
                for job_id, status, error in final.values_list("id", "status", "error"):
                    item = in_flight.pop(job_id)
                    if status == Analysis.Status.DONE:
                        self.computed += 1
                        bar.computed += 1
                        bar.draw()
                    else:
                        self._fail(
                            bar, f"{item.where}: analysis {job_id} {status}{': ' + error if error else ''}"
                        )
        except KeyboardInterrupt:
            waiting = list(
                Analysis.objects.filter(pk__in=in_flight, status=Analysis.Status.QUEUED).values_list(
                    "id", flat=True
                )
            )
            for job_id in waiting:
                services.do_cancel(user, job_id)
            bar.say(
                f"interrupted: cancelled {len(waiting)} queued job(s); {len(in_flight) - len(waiting)} running "
                "job(s) left to finish (they are cached when they do)"
            )
            raise
