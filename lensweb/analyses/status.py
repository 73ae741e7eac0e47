"""What workers hold and what each lens' state is, from the workers' own records: the status strip, the API's
/status and the cards' "loading lens" all read it here.

A lens is `loaded` when a live worker holds it, `loading` while one loads it, `cached` when one keeps it in CPU
memory (lenscache: the next job moves it to the device), `cold` when live workers serve it but none holds it
(the first job loads it, taking about its last measured load time), and `unserved` when no live worker serves
it. A worker counts as live while its heartbeat is fresher than LENSWEB_STALE_AFTER.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from django.utils import timezone

from . import catalog, notify
from .models import Analysis, Generation, JobStatus, LensLoad, Phase, WorkerRecord
from .rates import last_load_seconds, load_left
from .services import live_workers


class LensState:
    LOADED = "loaded"
    LOADING = "loading"
    CACHED = "cached"
    COLD = "cold"
    UNSERVED = "unserved"


@dataclass(frozen=True)
class LensStatus:
    id: str
    name: str
    state: str
    workers: int  # live workers that serve it
    queued: int  # jobs waiting for it
    load_seconds: float | None  # its last measured load time, for "about N s"; None before the first
    loading_left_seconds: float | None  # while loading: about how long is left

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FleetStatus:
    workers_online: int
    queued: int
    lenses: list[LensStatus]

    def to_dict(self) -> dict:
        return {
            "workers_online": self.workers_online,
            "queued": self.queued,
            "lenses": [lens.to_dict() for lens in self.lenses],
        }


# --- what workers say of themselves -------------------------------------------------------------------------


def worker_loading(worker_id: int, lens_id: str) -> None:
    WorkerRecord.objects.filter(pk=worker_id).update(loading_lens=lens_id, loading_since=timezone.now())
    notify.status_changed()


def worker_loaded(
    worker_id: int, lens_id: str | None, seconds: float | None = None, source: str = ""
) -> None:
    """Loading ended: `lens_id` held now (None: the load failed and nothing is held), taken from `source`
    ("disk", "cpu_cache"), which a LensLoad row records."""
    record = WorkerRecord.objects.filter(pk=worker_id).first()
    if record is None:
        return
    load_seconds = dict(record.load_seconds or {})
    if lens_id and seconds is not None:
        load_seconds[lens_id] = round(seconds, 2)
        if source in LensLoad.Source.values:
            LensLoad.objects.create(lens_id=lens_id, worker=record.name, source=source, seconds=seconds)
    WorkerRecord.objects.filter(pk=worker_id).update(
        lens_id=lens_id or "",
        loading_lens="",
        loading_since=None,
        load_seconds=load_seconds,
        cached_lenses=[cached for cached in record.cached_lenses or [] if cached != lens_id],
    )
    notify.status_changed()


# --- what the pages and the API read ----------------------------------------------------------------------


def _queued_by_lens() -> dict[str, int]:
    counts: dict[str, int] = {}
    for model in (Analysis, Generation):
        for lens_id in model.objects.filter(status=model.Status.QUEUED).values_list("lens_id", flat=True):
            counts[lens_id] = counts.get(lens_id, 0) + 1
    return counts


def lens_status(spec, live: list[WorkerRecord], queued: int, now) -> LensStatus:
    serving = [w for w in live if spec.id in (w.lenses or [])]
    load_seconds = last_load_seconds(spec.id)
    left = None
    if not serving:
        state = LensState.UNSERVED
    elif any(w.lens_id == spec.id and w.loading_lens != spec.id for w in serving):
        state = LensState.LOADED
    elif loading := [w for w in serving if w.loading_lens == spec.id and w.loading_since]:
        state = LensState.LOADING
        left = load_left(load_seconds, max(w.loading_since for w in loading), now)  # the latest to start
    elif any(spec.id in (w.cached_lenses or []) for w in serving):
        state = LensState.CACHED
    else:
        state = LensState.COLD
    return LensStatus(
        id=spec.id,
        name=spec.name,
        state=state,
        workers=len(serving),
        queued=queued,
        load_seconds=load_seconds,
        loading_left_seconds=None if left is None else round(left, 1),
    )


def fleet_status(user=None) -> FleetStatus:
    """The workers and the lenses listed to `user` (None: to everyone; catalog), with their states."""
    now = timezone.now()
    live = list(live_workers())  # the one liveness rule
    queued = _queued_by_lens()
    try:
        specs = catalog.lenses_for(user)
    except Exception:  # a broken registry: no lens to speak of; the workers still count
        specs = []
    return FleetStatus(
        workers_online=len(live),
        queued=sum(queued.values()),
        lenses=[lens_status(spec, live, queued.get(spec.id, 0), now) for spec in specs],
    )


def status_detail(job, position: int | None) -> str | None:
    """Where a job stands, in a line (the API's `status_detail`): why a queued job waits (its lens served by no
    live worker, an identical analysis it follows, its place) and what a running analysis does (loading its
    lens, about how long that takes; its phase). Reads what rates.attach set on the job."""
    if job.status == JobStatus.QUEUED:
        if position:
            place = f"position {position} in the queue"
        elif (job.metadata or {}).get("followed"):
            place = "waiting for an identical analysis already under way: its rows will be copied"
        else:
            place = "waiting in the queue"
        note = getattr(job, "waiting_note", "")
        return f"{place}; {note}" if note else place
    if job.status != JobStatus.RUNNING or job.kind != Analysis.kind or not job.phase:
        return None
    if job.phase == Phase.LOADING:
        left = getattr(job, "expected_load_left", None)
        return f"loading lens {job.lens_id}" + ("" if left is None else f" (about {math.ceil(left)} s)")
    return job.phase_label
