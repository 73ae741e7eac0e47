"""The lenses a worker process holds: one on its device (the one jobs run on), recently used ones in CPU memory
within LENSWEB_CPU_CACHE_BYTES (least recently used first out), and nothing on the device once it has been idle
for LENSWEB_IDLE_UNLOAD_S.

A switch to another lens waits until no job uses the one on the device (a job in flight is never evicted), then
moves that one to the CPU cache (or lets go of it where it does not fit) and takes the new one from the CPU
cache (a copy to the device: fast) or from its files (a load: slow). On a CPU-only worker the device is the CPU:
the cache keeps an idle lens only within the budget, and 0 frees it. A pinned lens is not unloaded for idling.
Pure Python over three engine functions (load, move, nbytes), so the policy is tested without weights.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

DEVICE, CPU_CACHE = "device", "cpu_cache"


@dataclass
class Held:
    key: tuple  # (spec, its files' stamp): a checkpoint replaced at the same path is another key
    lens: Any
    nbytes: int
    last_used: float
    home: str  # the device it was loaded on, where it goes back from the CPU cache

    @property
    def on_cpu(self) -> bool:
        return self.home.split(":")[0] == "cpu"


@dataclass(frozen=True)
class Loaded:
    """What acquire() did to get the lens: its source ("held", "cpu_cache" or "disk") and how long it took."""

    source: str
    seconds: float


@dataclass
class LensCache:
    load: Any  # spec -> lens (from its files)
    move: Any  # (lens, device) -> lens, or None for one that cannot leave its device (let go instead)
    nbytes: Any  # (lens, …) -> int: the bytes of those lenses together, a storage they share counted once
    free: Any = None  # () -> None: returns freed memory to the device (gc, the CUDA allocator's cache)
    cpu_budget: int = 0
    idle_unload_s: float = 0.0  # 0: never
    clock: Any = time.monotonic
    on_device: Held | None = None
    cpu: OrderedDict = field(default_factory=OrderedDict)  # key -> Held, least recently used first
    pinned: set = field(default_factory=set)  # lens ids
    in_use: int = 0
    last: Loaded | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def acquire(self, spec, key: tuple):
        """The lens for `key` on the device, marked in use until release(). A different lens on the device is
        replaced only once no job uses it."""
        with self._cond:
            while self.on_device is not None and self.on_device.key != key and self.in_use:
                self._cond.wait()
            if self.on_device is None or self.on_device.key != key:
                started = self.clock()
                held = self.cpu.pop(key, None)  # out first: the lens stepping down must not evict it
                self._step_down()
                self._forget_spec(spec)  # another stamp of the same lens: its files changed
                if held is not None:
                    if not held.on_cpu:
                        held.lens = self.move(held.lens, held.home)
                    source = CPU_CACHE
                else:
                    lens = self.load(spec)
                    held = Held(key, lens, self.nbytes((lens,)), started, str(getattr(lens, "device", "cpu")))
                    source = "disk"
                self.on_device = held
                self.last = Loaded(source, self.clock() - started)
            else:
                self.last = Loaded("held", 0.0)
            self.in_use += 1
            self.on_device.last_used = self.clock()
            return self.on_device.lens

    def release(self) -> None:
        with self._cond:
            self.in_use = max(0, self.in_use - 1)
            if self.on_device is not None:
                self.on_device.last_used = self.clock()
            self._cond.notify_all()

    def tidy(self, unload: set | frozenset = frozenset()) -> bool:
        """The periodic check (each heartbeat): the device copy goes after LENSWEB_IDLE_UNLOAD_S without work
        (unless pinned); the lenses in `unload` (staff asked, from admin) go from device and CPU cache alike,
        the device one once no job uses it. True when something was let go."""
        changed = False
        with self._cond:
            held = self.on_device
            if held is not None and not self.in_use:
                lens_id = held.key[0].id
                idle = self.clock() - held.last_used
                if lens_id in unload:
                    self.on_device, changed = None, True
                    self._free()
                elif self.idle_unload_s > 0 and idle >= self.idle_unload_s and lens_id not in self.pinned:
                    self._step_down()
                    changed = True
            for key in [key for key in self.cpu if key[0].id in unload]:
                del self.cpu[key]
                changed = True
        return changed

    def state(self) -> dict[str, list[str]]:
        """Lens ids by where they are: {"device": [...], "cpu_cache": [...]} (most recently used last)."""
        with self._cond:
            return {
                DEVICE: [self.on_device.key[0].id] if self.on_device else [],
                CPU_CACHE: [key[0].id for key in self.cpu],
            }

    def holds(self, key: tuple) -> bool:
        with self._cond:
            return self.on_device is not None and self.on_device.key == key

    # --- under the lock -------------------------------------------------------------------------------------

    def _step_down(self) -> None:
        """The device's lens into the CPU cache (moved to the CPU), or let go where it cannot fit."""
        held, self.on_device = self.on_device, None
        if held is None:
            return
        if held.nbytes > self.cpu_budget:
            self._free()  # let go of: its memory back
            return
        moved = not held.on_cpu
        if moved:
            held.lens = self.move(held.lens, "cpu")
            if held.lens is None:  # it cannot leave its device (8-bit CUDA weights): let go of
                self._free()
                return
        self.cpu[held.key] = held  # the most recently used: last
        evicted = False
        # together: lenses of one base (the demo lens and the demo NLA's AV) hold its weights once
        while self.cpu and self.nbytes(tuple(h.lens for h in self.cpu.values())) > self.cpu_budget:
            self.cpu.popitem(last=False)
            evicted = True
        if moved or evicted:  # device memory to give back, or a lens let go (a full collection costs ~0.1 s)
            self._free()

    def _free(self) -> None:
        if self.free is not None:
            self.free()

    def _forget_spec(self, spec) -> None:
        for key in [key for key in self.cpu if key[0] == spec]:
            del self.cpu[key]
