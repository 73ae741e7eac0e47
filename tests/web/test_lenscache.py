"""The lens cache's policy (lensweb.analyses.lenscache), with stand-in lenses: LRU order within the CPU budget, a
budget of 0, a switch that waits for the running job, idle unload, pins, staff's unloads, changed files."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest

from lensweb.analyses.lenscache import LensCache

SIZE = 100


@dataclass(frozen=True)
class Spec:
    id: str
    base: str | None = None  # lenses of one base share its bytes (World.nbytes)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class World:
    """load/move/nbytes that record what they were asked, over lenses that are dicts."""

    def __init__(self, home="cuda:0"):
        self.home, self.events = home, []

    def load(self, spec):
        self.events.append(("load", spec.id))
        return {"id": spec.id, "device": self.home, **({"base": spec.base} if spec.base else {})}

    def move(self, lens, device):
        self.events.append(("move", lens["id"], device))
        lens["device"] = device
        return lens

    def nbytes(self, lenses):
        """SIZE per base: lenses that name the same "base" share its bytes, as inference.placement counts them."""
        return SIZE * len({lens.get("base", lens["id"]) for lens in lenses})


class Lens(dict):
    @property
    def device(self):
        return self["device"]


def make(budget, idle=0.0, home="cuda:0"):
    world, clock = World(home), Clock()

    def load(spec):
        return Lens(world.load(spec))

    cache = LensCache(
        load=load, move=world.move, nbytes=world.nbytes, cpu_budget=budget, idle_unload_s=idle, clock=clock
    )
    return cache, world, clock


def use(cache, lens_id, stamp=1):
    lens = cache.acquire(Spec(lens_id), (Spec(lens_id), stamp))
    cache.release()
    return lens


def test_recently_used_lenses_stay_in_cpu_memory_within_the_budget_least_recent_out_first():
    cache, world, _ = make(budget=2 * SIZE + 50)
    for lens_id in ("a", "b", "c"):
        use(cache, lens_id)
    assert cache.state() == {"device": ["c"], "cpu_cache": ["a", "b"]}
    assert use(cache, "a")["device"] == "cuda:0" and cache.last.source == "cpu_cache"
    assert cache.state() == {"device": ["a"], "cpu_cache": ["b", "c"]}
    use(cache, "d")  # a steps down: three would not fit, so b (the least recently used) goes
    assert cache.state() == {"device": ["d"], "cpu_cache": ["c", "a"]}
    assert [e for e in world.events if e[0] == "load"] == [("load", x) for x in "abcd"]  # a loaded once
    assert ("move", "a", "cpu") in world.events and ("move", "a", "cuda:0") in world.events
    use(cache, "d")
    assert cache.last.source == "held"


def test_a_budget_of_zero_keeps_nothing_and_a_lens_over_the_budget_is_let_go():
    cache, world, _ = make(budget=0)
    use(cache, "a"), use(cache, "b"), use(cache, "a")
    assert cache.state() == {"device": ["a"], "cpu_cache": []}
    assert [e[1] for e in world.events if e[0] == "load"] == ["a", "b", "a"]
    assert not [e for e in world.events if e[0] == "move"]  # never copied to the CPU: dropped
    small, world, _ = make(budget=SIZE - 1)
    use(small, "a"), use(small, "b")
    assert small.state()["cpu_cache"] == []


def test_a_lens_that_cannot_leave_its_device_is_let_go_at_a_switch():
    cache, world, _ = make(budget=10 * SIZE)
    cache.move = lambda lens, device: None if lens["id"] == "a" else world.move(lens, device)  # 8-bit CUDA
    use(cache, "a"), use(cache, "b"), use(cache, "c")
    assert cache.state() == {"device": ["c"], "cpu_cache": ["b"]}  # a was let go, b moved to the CPU
    use(cache, "a")
    assert cache.last.source == "disk"


def test_a_cpu_worker_moves_nothing_and_keeps_an_idle_lens_only_within_its_budget():
    cache, world, clock = make(budget=SIZE, idle=10, home="cpu")
    use(cache, "a")
    clock.now = 10
    assert cache.tidy() and cache.state() == {"device": [], "cpu_cache": ["a"]}
    use(cache, "a")
    assert cache.last.source == "cpu_cache" and not [e for e in world.events if e[0] == "move"]


def test_a_switch_waits_for_the_job_running_on_the_lens_it_replaces():
    cache, world, _ = make(budget=SIZE)
    cache.acquire(Spec("a"), (Spec("a"), 1))  # a job runs on a
    switched = threading.Event()

    def other_job():
        use(cache, "b")
        switched.set()

    thread = threading.Thread(target=other_job)
    thread.start()
    assert not switched.wait(0.3), "b was loaded while a's job was running"
    assert cache.state()["device"] == ["a"] and ("load", "b") not in world.events
    world.events.append(("a's job ends",))
    cache.release()
    thread.join(timeout=10)
    assert switched.is_set()
    assert world.events.index(("a's job ends",)) < world.events.index(("load", "b"))
    # the same lens is shared, not waited for
    cache.acquire(Spec("b"), (Spec("b"), 1))
    assert cache.acquire(Spec("b"), (Spec("b"), 1))["id"] == "b" and cache.in_use == 2


def test_the_device_copy_goes_after_the_idle_time_unless_pinned():
    cache, world, clock = make(budget=SIZE, idle=10)
    use(cache, "a")
    clock.now = 9.9
    assert not cache.tidy() and cache.state()["device"] == ["a"]
    clock.now = 10
    assert cache.tidy()
    assert cache.state() == {"device": [], "cpu_cache": ["a"]} and world.events[-1] == ("move", "a", "cpu")
    use(cache, "a")
    cache.pinned = {"a"}
    clock.now = 1000
    assert not cache.tidy() and cache.state()["device"] == ["a"]
    cache.pinned = set()
    assert cache.tidy() and cache.state()["device"] == []
    never, _, clock = make(budget=SIZE, idle=0)  # 0: never unloaded for idling
    use(never, "a")
    clock.now = 1e9
    assert not never.tidy() and never.state()["device"] == ["a"]


def test_staff_unload_waits_for_the_running_job_then_frees_device_and_cpu_cache():
    cache, _, _ = make(budget=2 * SIZE)
    use(cache, "b")
    cache.acquire(Spec("a"), (Spec("a"), 1))
    assert cache.state() == {"device": ["a"], "cpu_cache": ["b"]}
    assert cache.tidy(unload={"a", "b"})  # b goes at once; a's job is running
    assert cache.state() == {"device": ["a"], "cpu_cache": []}
    cache.release()
    assert cache.tidy(unload={"a"}) and cache.state() == {"device": [], "cpu_cache": []}


def test_a_lens_whose_files_changed_loads_anew():
    cache, world, _ = make(budget=2 * SIZE)
    use(cache, "a", stamp=1), use(cache, "b")
    use(cache, "a", stamp=2)  # its checkpoint was replaced: the cached copy is stale
    assert [e[1] for e in world.events if e[0] == "load"] == ["a", "b", "a"]
    assert cache.state() == {"device": ["a"], "cpu_cache": ["b"]}


def test_lenses_that_share_a_base_count_it_once_in_the_budget():
    """The demo lens and the demo NLA hold one base: both stay in a budget that holds that base once."""
    cache, world, _ = make(budget=SIZE)
    for lens_id, base in (("lens", "smol"), ("nla", "smol"), ("other", None)):
        cache.acquire(Spec(lens_id, base), (Spec(lens_id, base), 1))
        cache.release()
    assert cache.state() == {"device": ["other"], "cpu_cache": ["lens", "nla"]}
    cache.acquire(Spec("third", None), (Spec("third", None), 1))
    cache.release()  # "other" steps down: with the shared base that is two bases, over the budget
    assert cache.state()["cpu_cache"] == ["other"]


@pytest.mark.parametrize("budget", [SIZE, 3 * SIZE])
def test_the_cpu_cache_never_holds_more_than_its_budget(budget):
    cache, _, _ = make(budget=budget)
    for lens_id in "abcdefabcabd":
        use(cache, lens_id)
        assert len(cache.cpu) * SIZE <= budget


@pytest.mark.django_db
def test_a_real_switch_waits_for_the_job_running_on_the_lens_it_replaces(tmp_path, monkeypatch, no_lens_held):
    """The engine's adapter with the tiny lens and a second lens: a worker thread's job holds "tiny"; another's
    job for "tiny-b" gets its lens only after that job released it."""
    from lensweb.analyses.engine import get_engine
    from tests.api.test_routing import write_two_lenses

    monkeypatch.setenv("LENSWEB_LENS_REGISTRY", str(write_two_lenses(tmp_path)))
    engine = get_engine()
    tiny, second = engine.get_spec("tiny"), engine.get_spec("tiny-b")
    events = []
    lens = engine.acquire(tiny)  # a job is running on tiny
    assert lens.spec.id == "tiny"

    def other_job():
        got = engine.acquire(second)
        events.append(("tiny-b acquired", got.spec.id))
        engine.release(second)

    thread = threading.Thread(target=other_job)
    thread.start()
    thread.join(timeout=1.0)
    assert thread.is_alive() and not events, "tiny-b was loaded while tiny's job was running"
    events.append(("tiny's job ends",))
    engine.release(tiny)
    thread.join(timeout=60)
    assert events == [("tiny's job ends",), ("tiny-b acquired", "tiny-b")]
    assert engine.held()["lens_id"] == "tiny-b" and engine.held()["cached"] == ["tiny"]
