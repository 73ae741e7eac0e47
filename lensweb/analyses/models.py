"""The database row is the job of record: a worker, a socket or a server may go away; the row stays."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone


class WorkerRecord(models.Model):
    """One worker process, as it last reported itself."""

    class State(models.TextChoices):
        STARTING = "starting"
        IDLE = "idle"
        BUSY = "busy"
        STOPPED = "stopped"
        LOST = "lost"

    name = models.CharField(max_length=200, unique=True)
    host = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    # The worker's own channel: cancel and targeted doorbells go here, not to the shared channel.
    channel_name = models.CharField(max_length=200, blank=True)
    device = models.CharField(max_length=50, blank=True)
    lens_id = models.CharField(max_length=100, blank=True)  # the lens it holds loaded; empty: none
    lenses = models.JSONField(default=list, blank=True)  # the ids of the lenses it serves
    loading_lens = models.CharField(max_length=100, blank=True)  # the lens it is loading now
    loading_since = models.DateTimeField(null=True, blank=True)
    load_seconds = models.JSONField(default=dict, blank=True)  # lens id -> its last load's seconds here
    memory_bytes = models.BigIntegerField(null=True, blank=True)
    cached_lenses = models.JSONField(default=list, blank=True)  # the ids it keeps in CPU memory (lenscache)
    # Staff's word from admin: lenses kept on the device past the idle time; lenses to let go of now (the
    # worker clears those it has let go).
    pinned_lenses = models.JSONField(default=list, blank=True)
    unload_lenses = models.JSONField(default=list, blank=True)
    state = models.CharField(max_length=20, choices=State.choices, default=State.STARTING)
    started_at = models.DateTimeField(default=timezone.now)
    last_heartbeat = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self):
        return self.name

    @classmethod
    def live(cls):
        """The one liveness rule: a heartbeat fresher than LENSWEB_STALE_AFTER, idle or busy."""
        cutoff = timezone.now() - timedelta(seconds=settings.LENSWEB_STALE_AFTER)
        return cls.objects.filter(last_heartbeat__gte=cutoff, state__in=[cls.State.IDLE, cls.State.BUSY])


class LensEntry(models.Model):
    """A lens as users meet it. The registry (TOML: files and family) seeds one per lens id the first time it
    is read (lensweb.analyses.catalog); staff edit it in admin: its name, description, who sees it, the default,
    the order. Its base model, layer and T are filled in when a worker loads it (lenses sharing a base are
    grouped by it)."""

    class Visibility(models.TextChoices):
        EVERYONE = "everyone", "everyone"
        STAFF = "staff", "staff only"
        HIDDEN = "hidden", "hidden (staff may still use it by id)"

    lens_id = models.CharField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    visibility = models.CharField(max_length=20, choices=Visibility.choices, default=Visibility.EVERYONE)
    is_default = models.BooleanField("default", default=False)
    order = models.IntegerField(default=0, help_text="lower first; equal ones in the registry's order")
    rows_budget = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="rows (positions × k) per batch on the workers; empty: LENSWEB_ROWS_BUDGET, else from free memory",
    )
    base_model = models.CharField(max_length=300, blank=True)  # its public name, once a worker loaded it
    layer = models.IntegerField(null=True, blank=True)
    t_text = models.IntegerField("T", null=True, blank=True)

    class Meta:
        verbose_name = "lens"
        verbose_name_plural = "lenses"
        ordering = ["order", "lens_id"]

    def __str__(self):
        return f"{self.name} ({self.lens_id})"


class LensLoad(models.Model):
    """One load of a lens onto a worker's device: from its files ("disk") or the CPU cache. /metrics' load-time
    histograms and the README's switch times read these."""

    class Source(models.TextChoices):
        DISK = "disk"
        CPU_CACHE = "cpu_cache"

    lens_id = models.CharField(max_length=100)
    worker = models.CharField(max_length=200)  # the worker's name: its record may be pruned before these
    source = models.CharField(max_length=20, choices=Source.choices)
    seconds = models.FloatField()
    at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self):
        return f"{self.lens_id} from {self.source} in {self.seconds:.2f} s"


class Phase(models.TextChoices):
    """What a running job is doing now (inference.batching.PHASE_STARTS names the batch's phases)."""

    LOADING = "loading", "loading the lens"
    DECODING = "decoding", "decoding explanations"
    ENCODING = "encoding", "encoding them back"
    SALIENCE = "salience", "computing salience"
    KL = "kl", "computing KL"


class JobStatus(models.TextChoices):
    """The life of every job of record, analysis or generation."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


# What computed an attempt's rows (lens metadata keys). A resumed job holds rows of several attempts: one
# result only if these agree (bf16 on a GPU and float32 on a CPU do not give the same numbers).
PLACEMENT_KEYS = ("identity", "engine_version", "device", "dtype")


class Job(models.Model):
    """What analyses and generations share: one lifecycle (queue, claim, heartbeat, stale re-queue, cancel,
    progress). Two tables, not one with a kind: every history, cache, export and metrics query is about
    analyses, and must not have to leave generations out."""

    Status = JobStatus

    FINAL = (Status.DONE, Status.FAILED, Status.CANCELLED)
    kind = ""  # "analysis" or "generation": events, queue keys and URLs say which table

    lens_id = models.CharField(max_length=100)
    input = models.JSONField()  # AnalysisInput.to_dict(): {"text": ...} or {"messages": [...]}
    options = models.JSONField()  # AnalysisOptions.to_dict() / GenerationOptions.to_dict()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    # Queue: FIFO within a user by (queued_at, id); fairness between users is computed (queue.py).
    queued_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveIntegerField(default=0)  # claims so far; a worker death costs one
    cancel_requested = models.BooleanField(default=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    # Where the running attempt is: a Phase, and progress counting the running batch's finished share.
    phase = models.CharField(max_length=20, blank=True)
    progress_partial = models.FloatField(default=0.0)
    # Progress present when the current attempt started: the ETA counts only this attempt's speed.
    attempt_base = models.PositiveIntegerField(default=0)
    attempt_started_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    timings = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at", "-id"]

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL

    @property
    def is_chat(self) -> bool:
        return "messages" in (self.input or {})

    @property
    def input_preview(self) -> str:
        if self.is_chat:
            return " / ".join(f"{m.get('role')}: {m.get('content')}" for m in self.input["messages"])
        return self.input.get("text") or ""

    @property
    def progress_now(self) -> float:
        """Positions done, counting the running batch's finished share."""
        return max(float(self.progress_done), self.progress_partial or 0.0)

    @property
    def percent(self) -> int:
        return int(100 * self.progress_now / self.progress_total) if self.progress_total else 0

    @property
    def phase_label(self) -> str:
        return Phase(self.phase).label if self.phase in Phase.values else ""

    def silence(self, now=None) -> dict | None:
        """For a running job: how long ago its worker was last heard from (`age`, seconds), from when that
        counts as "stopped answering" (`after`: 2.5 heartbeats missed) and when the job goes back to the
        queue (`requeue`: LENSWEB_STALE_AFTER); `silent` now. A dead worker sends nothing: the card counts on
        from `age` by itself (static/js/app.js) and says so instead of an ETA."""
        if self.status != self.Status.RUNNING:
            return None
        heard = self.heartbeat_at or self.attempt_started_at
        if heard is None:
            return None
        age = max(0.0, ((now or timezone.now()) - heard).total_seconds())
        after = 2.5 * settings.LENSWEB_HEARTBEAT_INTERVAL
        return {
            "age": age,
            "after": after,
            "requeue": float(settings.LENSWEB_STALE_AFTER),
            "silent": age >= after,
            "requeue_in": max(0.0, settings.LENSWEB_STALE_AFTER - age),
        }

    def eta_seconds(self, now=None) -> float | None:
        """Remaining seconds: from the seconds per position measured on earlier jobs of this lens and option
        set (`expected_rate`, attached by lensweb.analyses.rates), blended with this attempt's own speed as
        its positions arrive; a lens still loading adds its expected load time left. None when neither is
        known yet."""
        if self.status != self.Status.RUNNING or not self.attempt_started_at or not self.progress_total:
            return None
        left = max(0.0, self.progress_total - self.progress_now)
        rate = getattr(self, "expected_rate", None)
        if self.phase == Phase.LOADING:
            loading = getattr(self, "expected_load_left", None)
            return None if rate is None else left * rate + (loading or 0.0)
        done_now = self.progress_now - self.attempt_base
        if done_now > 0:
            elapsed = ((now or timezone.now()) - self.attempt_started_at).total_seconds()
            own = elapsed / done_now
            # the measured rate counts for two positions' worth: it steadies the first seconds' guess
            rate = own if rate is None else (2 * rate + done_now * own) / (2 + done_now)
        return None if rate is None else left * rate

    @property
    def elapsed_seconds(self) -> float | None:
        if not self.started_at:
            return None
        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()


class Analysis(Job):
    kind = "analysis"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="analyses")
    worker = models.ForeignKey(
        WorkerRecord, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )

    class Meta(Job.Meta):
        verbose_name_plural = "analyses"
        indexes = [
            # the dashboard and /metrics filter by these on every poll and scrape
            models.Index(fields=["created_at"], name="analysis_created_idx"),
            models.Index(fields=["started_at"], name="analysis_started_idx"),
            models.Index(fields=["finished_at"], name="analysis_finished_idx"),
            models.Index(fields=["status", "queued_at", "id"], name="analysis_claim_idx"),
            models.Index(fields=["owner", "status"], name="analysis_owner_status_idx"),
            models.Index(fields=["status", "heartbeat_at"], name="analysis_stale_idx"),
            models.Index(fields=["owner", "attempt_started_at"], name="analysis_owner_served_idx"),
        ]

    def __str__(self):
        return f"Analysis {self.pk} ({self.status})"


class Generation(Job):
    """Continuations of a text, or a chat's next reply; optionally followed by the analysis of the result."""

    kind = "generation"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="generations")
    worker = models.ForeignKey(
        WorkerRecord, null=True, blank=True, on_delete=models.SET_NULL, related_name="generations"
    )
    # Running: {"samples": [...], "partial": true}, rewritten as tokens arrive; then the engine's result.
    result = models.JSONField(null=True, blank=True)
    # "Generate, then analyse": the analysis' options, and the analysis once it is queued.
    analysis_options = models.JSONField(null=True, blank=True)
    follow_up = models.OneToOneField(
        Analysis, null=True, blank=True, on_delete=models.SET_NULL, related_name="source_generation"
    )
    follow_up_error = models.TextField(blank=True)

    class Meta(Job.Meta):
        indexes = [
            models.Index(fields=["status", "queued_at", "id"], name="gen_job_claim_idx"),
            models.Index(fields=["owner", "created_at"], name="gen_job_owner_day_idx"),
            models.Index(fields=["owner", "status"], name="gen_job_owner_status_idx"),
            models.Index(fields=["status", "heartbeat_at"], name="gen_job_stale_idx"),
            models.Index(fields=["owner", "attempt_started_at"], name="gen_job_owner_served_idx"),
        ]

    def __str__(self):
        return f"Generation {self.pk} ({self.status})"

    @property
    def samples(self) -> list[dict]:
        return list((self.result or {}).get("samples") or [])

    @property
    def is_reply(self) -> bool:
        """A chat, or a text sent as one user turn: the sample is the assistant's next turn."""
        return self.is_chat or bool((self.options or {}).get("chat_reply"))

    def reply_messages(self, index: int) -> list[dict]:
        """The conversation with sample `index` as the assistant's turn (a prefilled assistant turn is
        continued, not repeated)."""
        text = self.samples[index]["text"]
        if self.is_chat:
            messages = [dict(m) for m in self.input["messages"]]
        else:
            messages = [{"role": "user", "content": self.input.get("text") or ""}]
        if messages and messages[-1].get("role") == "assistant":
            messages[-1]["content"] = f"{messages[-1].get('content', '')}{text}"
        else:
            messages.append({"role": "assistant", "content": text})
        return messages

    def analysis_input(self, index: int) -> dict:
        """What "Analyse" sends for sample `index`: the conversation with the reply, or the text continued."""
        if self.is_reply:
            data = {"messages": self.reply_messages(index)}
            if self.input.get("default_system_prompt") is False:
                data["default_system_prompt"] = False
            return data
        return {"text": f"{self.input.get('text') or ''}{self.samples[index]['text']}"}


class Probe(Job):
    """A question to a lens about an analysis' text, answered by a worker like any job (one encoder pass or a
    forward): score the owner's own explanation at a position (`score`), read the layer activations at
    positions (`activations`), or explain vectors of the caller's own as if each were an activation
    (`describe`: an SAE feature's direction, a difference of activations), or explain the difference of two
    activations (`compare`: two positions of analyses, or vectors). The web process never loads a model, so these queue too; a score is kept with
    its analysis (exported as `user_scores`)."""

    kind = "probe"

    class What(models.TextChoices):
        SCORE = "score", "score an explanation"
        ACTIVATIONS = "activations", "read activations"
        DESCRIBE = "describe", "describe vectors"
        COMPARE = "compare", "explain a difference"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="probes")
    worker = models.ForeignKey(
        WorkerRecord, null=True, blank=True, on_delete=models.SET_NULL, related_name="probes"
    )
    # the analysis asked about (none for `describe`: vectors of the caller's own, for `lens_id`)
    analysis = models.ForeignKey(
        Analysis, null=True, blank=True, on_delete=models.CASCADE, related_name="probes"
    )
    what = models.CharField(max_length=20, choices=What.choices)
    # score: {"position", "explanation" | "explanation_token_ids"}; activations: {"positions": [...]};
    # describe: {"vectors": [[...]], "token_ids": [...] | null};
    # compare: {"a": side, "b": side}, a side {"analysis_id", "position", "input"} or {"vector": [...]}
    request = models.JSONField()
    # score: {"row": Row.to_dict(), "delta_mse": …}; activations: {"positions": [...], "activations": [[...]]};
    # describe: {"rows": [Row.to_dict(), …], "metadata": {...}}; compare: {"row": …, "diff_norm": …}
    result = models.JSONField(null=True, blank=True)

    class Meta(Job.Meta):
        indexes = [
            models.Index(fields=["status", "queued_at", "id"], name="probe_claim_idx"),
            models.Index(fields=["owner", "status"], name="probe_owner_status_idx"),
            models.Index(fields=["status", "heartbeat_at"], name="probe_stale_idx"),
            models.Index(fields=["owner", "attempt_started_at"], name="probe_owner_served_idx"),
            models.Index(fields=["analysis", "what", "status"], name="probe_analysis_idx"),
        ]

    def __str__(self):
        return f"Probe {self.pk} ({self.what}, {self.status})"


class AnalysisRow(models.Model):
    """One analysed position. UNIQUE(analysis, position): a resumed or repeated batch never duplicates."""

    analysis = models.ForeignKey(Analysis, on_delete=models.CASCADE, related_name="rows")
    position = models.PositiveIntegerField()
    data = models.JSONField()

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["analysis", "position"], name="analysis_row_unique_position")
        ]

    def __str__(self):
        return f"row {self.position} of {self.analysis_id}"


class PositionRate(models.Model):
    """Seconds per analysed position, measured on finished jobs, per lens and option set (rates.py): the
    ETA of a job that has not produced a row yet."""

    lens_id = models.CharField(max_length=100)
    options_key = models.CharField(max_length=100)  # rates.options_key: the options that change the work
    seconds_per_position = models.FloatField()
    jobs = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["lens_id", "options_key"], name="position_rate_key")]

    def __str__(self):
        return f"{self.lens_id} {self.options_key}: {self.seconds_per_position:.3f} s/position"
