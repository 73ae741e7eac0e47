"""The result cache: look up, attach, store, complete followers, evict. The database is the record; a Redis
front (LENSWEB_CACHE_FRONT, set when REDIS_URL is) keeps recently used entries for LENSWEB_CACHE_REDIS_TTL.

The core's one submit path asks this module (plugged in as its result store by CacheConfig.ready()):
`key_for` and `lookup` before a submit, `attach` once its row exists; `job_ended` hears the core's signal
when an analysis reaches a final state. A result is stored only when a worker finished it
`done` with every position in one attempt, computed by the lens identity, on the device type and in the
dtype its key names, under this engine version.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.cache import caches
from django.db import transaction
from django.db.models import Count, F, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from inference import engine as lens_engine
from lensweb.analyses import notify
from lensweb.analyses.engine import files_stamp, get_engine
from lensweb.analyses.models import PLACEMENT_KEYS, Analysis, AnalysisRow
from lensweb.analyses.quotas import check_daily_cap, day_bounds
from lensweb.analyses.services import COPY_MARKS, ring_doorbell, summarize_rows

from .models import CachedResult, CacheLink

log = logging.getLogger(__name__)

Status = Analysis.Status
UNFINISHED = (Status.QUEUED, Status.RUNNING)
# Result metadata that describes one job (its copy, its attempts), not the computation: never stored.
COPY_KEYS = (*COPY_MARKS, "attempt_placements")


@dataclass(frozen=True)
class Key:
    key: str
    lens_identity: str
    n_tokens: int
    engine_version: str
    device: str  # a device type (cpu, cuda) and a dtype: inference.engine.placement
    dtype: str
    # The key of the same result in the shared scope (what an operator warmed); equal to `key` when the
    # request is itself in the shared scope.
    shared: str = ""
    scope: str | None = ""  # whose requests it answers (scope_of); None: not known (an old link)


@dataclass(frozen=True)
class Hit:
    key: str
    rows: list[dict]
    metadata: dict
    timings: dict
    computed_seconds: float


# --- keys --------------------------------------------------------------------------------------------------

_identities: dict[tuple, str] = {}
_identity_lock = threading.Lock()


def lens_identity(spec) -> str | None:
    """The engine's `identity(spec)`, computed once per lens (and per change of its files) in this
    process: it hashes the checkpoint and model files. None when the lens cannot be hashed (the fake
    engine's, a missing file): such requests bypass the cache and the worker reports the real error."""
    memo = (spec, files_stamp(spec))  # the engine's change detection: a replaced checkpoint hashes anew
    with _identity_lock:
        if memo in _identities:
            return _identities[memo]
    try:
        identity = get_engine().identity(spec)
    except Exception:
        log.warning("lens %s: no identity, so its results are not cached", spec.id, exc_info=True)
        identity = None
    with _identity_lock:
        _identities[memo] = identity
    return identity


def warm(spec) -> None:
    """The lens' identity, computed at a web process' start (lensweb.analyses.warmup) rather than on the
    first submission."""
    lens_identity(spec)


def scope_of(owner) -> str:
    """Whose results a request may be answered from: "" (everyone's) for the operator's warmer, for a
    request without an owner (warm_cache --local) and where LENSWEB_RESULT_CACHE_SHARED says the deployment
    is one trusted group; otherwise the owner's own, so that a hit never tells one user what another asked.
    Either way the shared entries (what an operator warmed) answer too."""
    if owner is None or settings.LENSWEB_RESULT_CACHE_SHARED or owner.get_username() == WARMER_USERNAME:
        return ""
    return f"user:{owner.pk}"


def key_for(spec, prepared, options, owner=None) -> Key | None:
    """The cache key of a prepared submission, or None when the cache is off or the lens has no identity.
    It names the device and dtype the workers will use (settings LENSWEB_DEVICE / LENSWEB_DTYPE), and the
    scope of `owner` (scope_of)."""
    if not settings.LENSWEB_RESULT_CACHE:
        return None
    identity = lens_identity(spec)
    if identity is None:
        return None
    device, dtype = lens_engine.placement(
        settings.LENSWEB_DEVICE, settings.LENSWEB_DTYPE, settings.LENSWEB_CPU_QUANT, spec.quant
    )
    return make_key(identity, device, dtype, prepared, options, scope=scope_of(owner))


def make_key(identity: str, device: str, dtype: str, prepared, options, scope: str = "") -> Key:
    computation = lens_engine.computation_identity(identity, device, dtype)
    shared = lens_engine.result_key(computation, prepared.token_ids, prepared.positions, options)
    return Key(
        hashlib.sha256(f"{shared}/{scope}".encode()).hexdigest() if scope else shared,
        identity,
        len(prepared.token_ids),
        lens_engine.ENGINE_VERSION,
        device,
        dtype,
        shared,
        scope,
    )


def prefix_sources(owner, lens_id: str, placement: dict, keyed: dict, limit: int) -> list[tuple]:
    """Finished results `owner` may be answered from (the shared scope and their own) of `lens_id`,
    computed where `placement` (a lens' metadata) says, with the `keyed` options, latest first, as
    ("the result cache", token ids, rows loader) for analyses.prefixes."""
    scope = scope_of(owner)
    found = (
        CachedResult.objects.filter(
            lens_id=lens_id,
            lens_identity=placement.get("identity") or "",
            engine_version=placement.get("engine_version") or "",
            device=lens_engine.device_type(placement.get("device") or ""),
            dtype=placement.get("dtype") or "",
            scope__in=["", scope] if scope else [""],
        )
        .order_by("-created_at")
        .values_list("pk", "options", "metadata")[:limit]
    )
    sources = []
    for pk, options, metadata in found:
        ids = (metadata or {}).get("token_ids")
        if isinstance(ids, list) and all(options.get(name) == value for name, value in keyed.items()):
            sources.append(("the result cache", ids, functools.partial(_entry_rows, pk)))
    return sources


def _entry_rows(pk: int, positions: set[int]) -> list[dict]:
    entry = CachedResult.objects.filter(pk=pk).first()
    return [row for row in entry.rows if row["position"] in positions] if entry else []


def computed_by(metadata: dict) -> tuple:
    """(lens identity, engine version, device type, dtype) of a lens' metadata: what computed a result."""
    return (
        metadata.get("identity"),
        metadata.get("engine_version"),
        lens_engine.device_type(metadata.get("device") or ""),
        metadata.get("dtype"),
    )


def attempts_computed_by(metadata: dict) -> set[tuple]:
    """computed_by of every attempt whose rows a job holds (analyses.services.do_record_metadata)."""
    return {
        computed_by(dict(zip(PLACEMENT_KEYS, placement, strict=True)))
        for placement in metadata.get("attempt_placements", [])
    }


def keyed_for(key) -> tuple:
    """The same four of a Key or a CacheLink: what its result must have been computed by."""
    return (key.lens_identity, key.engine_version, key.device, key.dtype)


# --- the optional Redis front ----------------------------------------------------------------------------


def _front():
    alias = settings.LENSWEB_CACHE_FRONT
    return caches[alias] if alias else None


def _front_key(key: str) -> str:
    return f"result:{key}"


def _front_get(key: str) -> dict | None:
    front = _front()
    if front is None:
        return None
    try:
        return front.get(_front_key(key))
    except Exception:  # the front is an optimisation: the database answers when Redis is away
        log.warning("result cache front: get failed", exc_info=True)
        return None


def _front_set(entry: CachedResult) -> None:
    front = _front()
    if front is None:
        return
    value = {
        "blob": bytes(entry.blob),
        "metadata": entry.metadata,
        "timings": entry.timings,
        "computed_seconds": entry.computed_seconds,
    }
    try:
        front.set(_front_key(entry.key), value, timeout=settings.LENSWEB_CACHE_REDIS_TTL)
    except Exception:
        log.warning("result cache front: set failed", exc_info=True)


def _front_delete(keys) -> None:
    front = _front()
    keys = list(keys)
    if front is None or not keys:
        return
    try:
        front.delete_many([_front_key(k) for k in keys])
    except Exception:
        log.warning("result cache front: delete failed", exc_info=True)


# --- looking up ---------------------------------------------------------------------------------------------


def peek(key: Key | None) -> bool:
    """Whether the cache holds `key`, without counting a hit."""
    return key is not None and CachedResult.objects.filter(key=key.key).exists()


def lookup(key: Key | None) -> Hit | None:
    """The entry for `key` (or, in a user's scope, the shared entry an operator warmed), counting a hit."""
    if key is None:
        return None
    for candidate in dict.fromkeys(k for k in (key.key, key.shared) if k):
        hit = _lookup_one(candidate)
        if hit is not None:
            return hit
    return None


def _lookup_one(key: str) -> Hit | None:
    """The front answers first; the database's hit counter, updated on every hit, also tells whether the
    entry still exists (an entry cleared from the database is gone)."""
    now = timezone.now()
    cached = _front_get(key)
    if cached is not None:
        if CachedResult.objects.filter(key=key).update(hits=F("hits") + 1, last_hit_at=now):
            return Hit(
                key,
                CachedResult(blob=cached["blob"]).rows,
                cached["metadata"],
                cached["timings"],
                cached["computed_seconds"],
            )
        _front_delete([key])
        return None
    entry = CachedResult.objects.filter(key=key).first()
    if entry is None:
        return None
    CachedResult.objects.filter(pk=entry.pk).update(hits=F("hits") + 1, last_hit_at=now)
    _front_set(entry)
    return Hit(entry.key, entry.rows, entry.metadata, entry.timings, entry.computed_seconds)


def _leader_for(key: Key) -> Analysis | None:
    """An unfinished job with this key that does not itself wait for another one."""
    link = (
        CacheLink.objects.filter(
            key=key.key, analysis__status__in=UNFINISHED, analysis__cancel_requested=False
        )
        .exclude(leader__status__in=UNFINISHED)
        .select_related("analysis")
        .order_by("analysis_id")
        .first()
    )
    return link.analysis if link else None


def attach(job: Analysis, key: Key | None, hit: Hit | None) -> None:
    """Called in the submit's transaction, once `job` exists: a hit completes it at once; an identical
    unfinished job makes it a follower that waits for that one; otherwise it is remembered under its key."""
    if key is None:
        return
    leader = None if hit is not None else _leader_for(key)
    CacheLink.objects.create(  # a hit's too: shared by link later, its result joins the shared scope
        analysis=job,
        key=key.key,
        shared_key=key.shared,
        lens_identity=key.lens_identity,
        engine_version=key.engine_version,
        device=key.device,
        dtype=key.dtype,
        n_tokens=key.n_tokens,
        leader=leader,
    )
    if hit is not None:
        _complete_from(job, hit, extra={})
    elif leader is not None:
        # True, not the leader's id: that job is someone else's (admins see it on the CacheLink)
        Analysis.objects.filter(pk=job.pk).update(metadata={"followed": True})
        job.refresh_from_db()


def detach(job: Analysis) -> None:
    """`job` grew (analyses.growth): its key names positions it no longer stops at, so nothing is stored
    under it, and jobs that waited for it compute for themselves."""
    release_followers(job)
    CacheLink.objects.filter(analysis=job).delete()


def _complete_from(job: Analysis, hit: Hit, extra: dict) -> bool:
    """A finished copy for `job`'s owner (if still queued: not cancelled meanwhile): its own rows, and
    metadata marked cached with the original computation time.

    Copies, not references to the entry: an entry may be evicted (by age, by size) at any moment, and every
    reader of a result (results page, exports, share links, the API, socket replays) reads AnalysisRow.
    A reference would have to become rows again at eviction — an unbounded write at the worst time — or
    the user's result would vanish with the entry. So each user keeps a copy that outlives the cache, and
    check_daily_cached_positions caps what cheap hits may copy per user and day."""
    metadata = {**hit.metadata, **extra, "cached": True, "computed_seconds": hit.computed_seconds}
    completed = Analysis.objects.filter(pk=job.pk, status=Status.QUEUED).update(
        status=Status.DONE,
        progress_done=len(hit.rows),
        progress_total=len(hit.rows),
        metadata=metadata,
        timings=hit.timings,
        finished_at=timezone.now(),
        worker=None,
        heartbeat_at=None,
    )
    if completed:
        AnalysisRow.objects.bulk_create(
            [AnalysisRow(analysis_id=job.pk, position=row["position"], data=row) for row in hit.rows],
            ignore_conflicts=True,
        )
    job.refresh_from_db()
    return bool(completed)


# --- what hits may copy ------------------------------------------------------------------------------------


def cached_positions_today(user, now=None) -> int:
    """Positions of `user`'s analyses created today that were answered from the cache (copied rows)."""
    start, _ = day_bounds(now)
    copies = Analysis.objects.filter(owner=user, created_at__gte=start, metadata__cached=True)
    return copies.aggregate(n=Sum("progress_total"))["n"] or 0


def check_daily_cached_positions(user, adding: int, now=None) -> None:
    """QuotaExceeded if copying `adding` more cached positions takes `user` past
    LENSWEB_MAX_CACHED_POSITIONS_PER_DAY (0: no cap)."""
    check_daily_cap(
        settings.LENSWEB_MAX_CACHED_POSITIONS_PER_DAY,
        lambda: cached_positions_today(user, now),
        adding,
        lambda used, cap: (
            f"this answer from the result cache has {adding:,} positions and you have been answered "
            f"{used:,} of your {cap:,} cached positions today"
        ),
        now,
    )


# --- when a job ends -------------------------------------------------------------------------------------


def on_job_ended(sender, job: Analysis, **kwargs) -> None:
    """The core's job_ended signal (inside the transaction that ended the job)."""
    job_ended(job)


def job_ended(job: Analysis) -> None:
    """Done: store the result, then complete the followers with it. Cancelled or failed: the followers
    compute themselves (the first becomes the leader of the others)."""
    with transaction.atomic():
        if job.status == Status.DONE:
            link = CacheLink.objects.filter(analysis=job).first()
            if link is None:
                return
            hit = _result_of(job)
            if _storable(job, link, hit):
                key = Key(
                    link.key,
                    link.lens_identity,
                    link.n_tokens,
                    link.engine_version,
                    link.device,
                    link.dtype,
                    scope=_scope_of_link(link, job),
                )
                store(key, job.lens_id, job.options, hit)
            complete_followers(job, hit)
        elif job.status in Analysis.FINAL:
            release_followers(job)


def _scope_of_link(link: CacheLink, job: Analysis) -> str | None:
    if not link.shared_key:
        return None  # linked before scopes were recorded
    return "" if link.key == link.shared_key else f"user:{job.owner_id}"


def _result_of(job: Analysis) -> Hit:
    rows = list(
        AnalysisRow.objects.filter(analysis_id=job.pk).order_by("position").values_list("data", flat=True)
    )
    seconds = (
        (job.finished_at - job.started_at).total_seconds() if job.started_at and job.finished_at else 0.0
    )
    if job.metadata.get("cached"):  # a copy: the time of the computation it copies
        seconds = float(job.metadata.get("computed_seconds") or 0.0)
    metadata = {k: v for k, v in (job.metadata or {}).items() if k not in COPY_KEYS}
    return Hit("", rows, metadata, dict(job.timings or {}), round(seconds, 3))


def _storable(job: Analysis, link: CacheLink, hit: Hit, *, copies: bool = False) -> bool:
    """Every position, computed in one attempt by the lens, engine version, device type and dtype the key
    names (by the worker, which may differ from the web process that made the key: a checkpoint swapped
    since, a rolling upgrade, a worker on another device than LENSWEB_DEVICE / LENSWEB_DTYPE say). A copy
    from the cache is stored already, but for a scope it was not in (`copies`: sharing by link)."""
    if not hit.rows or len(hit.rows) != job.progress_total or (job.metadata.get("cached") and not copies):
        return False
    if job.attempt_base and len(attempts_computed_by(job.metadata or {})) != 1:
        # Resumed after rows of an earlier attempt that ran another lens, engine, device or dtype (or
        # that recorded none): rows of two results.
        log.info("analysis %s: resumed after rows computed elsewhere, not cached", job.pk)
        return False
    computed, keyed = computed_by(job.metadata or {}), keyed_for(link)
    if computed != keyed:
        log.warning(
            "analysis %s: computed by (lens, engine, device, dtype) %s but keyed for %s: not cached "
            "(do LENSWEB_DEVICE / LENSWEB_DTYPE of the web processes match the workers'?)",
            job.pk, computed, keyed,
        )  # fmt: skip
        return False
    return True


def on_shared_by_link(sender, analysis: Analysis, public: bool, **kwargs) -> None:
    """A text shared by link is no longer private: its result answers everyone (in the shared scope) until
    the link is taken back. An entry that was shared already (an operator warmed it) is left as it is."""
    if not public:
        entries = CachedResult.objects.filter(shared_from=analysis)
        keys = list(entries.values_list("key", flat=True))
        entries.delete()
        _front_delete(keys)
        return
    link = CacheLink.objects.filter(analysis=analysis).first()
    if (
        analysis.status != Status.DONE
        or link is None
        or not link.shared_key
        or link.shared_key == link.key  # in the shared scope already
        or CachedResult.objects.filter(key=link.shared_key).exists()
    ):
        return
    hit = _result_of(analysis)
    if not _storable(analysis, link, hit, copies=True):
        return
    key = Key(
        link.shared_key, link.lens_identity, link.n_tokens, link.engine_version, link.device, link.dtype
    )
    entry = store(key, analysis.lens_id, analysis.options, hit)
    CachedResult.objects.filter(pk=entry.pk).update(shared_from=analysis)


def store(key: Key, lens_id: str, options: dict, hit: Hit) -> CachedResult:
    blob = CachedResult.pack(hit.rows)
    entry, _ = CachedResult.objects.update_or_create(
        key=key.key,
        defaults={
            "lens_id": lens_id,
            "lens_identity": key.lens_identity,
            "device": key.device,
            "dtype": key.dtype,
            "engine_version": key.engine_version,
            "options": options,
            "n_tokens": key.n_tokens,
            "blob": blob,
            "metadata": hit.metadata,
            "timings": hit.timings,
            "computed_seconds": hit.computed_seconds,
            "size_bytes": len(blob),
            "scope": key.scope,
        },
    )
    _front_set(entry)
    evict()
    return entry


def complete_followers(leader: Analysis, hit: Hit) -> list[int]:
    """The leader's rows to each follower still waiting, streamed to its owner's socket."""
    completed = []
    for job in Analysis.objects.filter(cache_link__leader=leader, status=Status.QUEUED):
        if _complete_from(job, hit, extra={"followed": True}):
            completed.append(job.pk)
            transaction.on_commit(lambda job=job: (notify.job_rows(job, hit.rows), notify.job_state(job)))
    return completed


def release_followers(leader: Analysis) -> list[int]:
    links = list(
        CacheLink.objects.filter(leader=leader, analysis__status=Status.QUEUED).order_by("analysis_id")
    )
    if not links:
        return []
    first, rest = links[0], links[1:]
    CacheLink.objects.filter(pk=first.pk).update(leader=None)
    CacheLink.objects.filter(pk__in=[link.pk for link in rest]).update(leader=first.analysis_id)
    Analysis.objects.filter(pk__in=[link.pk for link in links]).update(metadata={})
    log.info(
        "analysis %s ended %s: %s computes for its %d followers",
        leader.pk,
        leader.status,
        first.pk,
        len(links),
    )
    transaction.on_commit(lambda: (ring_doorbell(), notify.queue_moved()))
    return [link.pk for link in links]


# --- eviction and clearing -------------------------------------------------------------------------------


def _delete(entries) -> int:
    keys = list(entries.values_list("key", flat=True))
    count, _ = CachedResult.objects.filter(key__in=keys).delete()
    _front_delete(keys)
    return count


def evict(now=None, max_age_days: float | None = None, max_bytes: int | None = None) -> int:
    """Entries older than max_age_days, then the least recently used until the total fits max_bytes
    (settings LENSWEB_CACHE_MAX_AGE_DAYS / LENSWEB_CACHE_MAX_BYTES by default; 0 turns a limit off)."""
    now = now or timezone.now()
    max_age_days = settings.LENSWEB_CACHE_MAX_AGE_DAYS if max_age_days is None else max_age_days
    max_bytes = settings.LENSWEB_CACHE_MAX_BYTES if max_bytes is None else max_bytes
    evicted = 0
    if max_age_days:
        evicted += _delete(CachedResult.objects.filter(created_at__lt=now - timedelta(days=max_age_days)))
    if max_bytes:
        total = CachedResult.objects.aggregate(n=Sum("size_bytes"))["n"] or 0
        if total > max_bytes:
            doomed = []
            entries = CachedResult.objects.annotate(used=Coalesce("last_hit_at", "created_at")).order_by(
                "used", "id"
            )
            for pk, size in entries.values_list("pk", "size_bytes").iterator():
                if total <= max_bytes:
                    break
                doomed.append(pk)
                total -= size
            evicted += _delete(CachedResult.objects.filter(pk__in=doomed))
    return evicted


def clear(
    lens_id: str | None = None, older_than_days: float | None = None, engine_version: str | None = None
) -> int:
    """Delete the entries that match every filter given (no filter: all of them)."""
    entries = CachedResult.objects.all()
    if lens_id:
        entries = entries.filter(lens_id=lens_id)
    if older_than_days is not None:
        entries = entries.filter(created_at__lt=timezone.now() - timedelta(days=older_than_days))
    if engine_version:
        entries = entries.filter(engine_version=engine_version)
    return _delete(entries)


@dataclass(frozen=True)
class CacheSize:
    entries: int
    size_bytes: int
    hits: int


def size() -> CacheSize:
    totals = CachedResult.objects.aggregate(n=Count("id"), bytes=Sum("size_bytes"), hits=Sum("hits"))
    return CacheSize(totals["n"], totals["bytes"] or 0, totals["hits"] or 0)


# --- warming ---------------------------------------------------------------------------------------------

WARMER_USERNAME = "cache-warmer"


def warmer_user():
    """The service user that owns the jobs `manage.py warm_cache` queues (created without a password)."""
    from django.contrib.auth import get_user_model

    user, created = get_user_model().objects.get_or_create(username=WARMER_USERNAME)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def store_computed(
    key: Key, spec_id: str, options, rows: list[dict], metadata: dict, timings: dict, seconds: float
):
    """A result computed outside the queue (`warm_cache --local`): stored as a worker's would be."""
    rows = sorted(rows, key=lambda row: row["position"])
    metadata = {**metadata, "summary": summarize_rows(rows)}
    hit = Hit(key.key, rows, metadata, dict(timings or {}), round(seconds, 3))
    return store(key, spec_id, options.to_dict(), hit)
