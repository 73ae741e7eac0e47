"""Lens load and switch times for a worker's lens cache (lensweb.analyses.lenscache), measured together in one run
with the machine's float32 matmul rate beside them.

Two lenses of one base (the demo lens, and the same lens under a second id: as two layers of one model would be)
and the tiny test lens (another base, built in-process), on this machine's device:

- a cold load from disk (the first lens of a base: its weights are read);
- a second lens of the same base while the first is held (its base is shared: no weights are read);
- a switch back to a lens kept in the CPU cache (on a GPU: a copy to the device; on a CPU worker: nothing moves);
- the same switch with LENSWEB_CPU_CACHE_BYTES=0 (the lens is let go and loaded from disk again);
- the first position of an analysis on a lens just taken from the CPU cache, against a lens that never left.

Prints a table and writes bench/results/fleet.md (or --out).

usage: python bench/fleet.py [--device cuda] [--repeats N] [--out PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engine import matmul_gflops  # noqa: E402
from inference import engine  # noqa: E402
from inference.registry import DEMO_SPEC, LensSpec  # noqa: E402
from inference.types import AnalysisInput, AnalysisOptions  # noqa: E402
from lensweb.analyses.lenscache import LensCache  # noqa: E402
from tests.tinylens import build_tiny_lens  # noqa: E402

TEXT = "The Eiffel Tower is in Paris, and the Colosseum is in Rome."


def fresh_cache(device: str, budget: int) -> LensCache:
    def load(spec):
        return engine.load(spec, device=device)

    return LensCache(
        load=load, move=engine.move, nbytes=engine.nbytes, free=engine.free_memory, cpu_budget=budget
    )


def timed(action) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    action()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started


def use(cache: LensCache, spec) -> float:
    def action():
        cache.acquire(spec, (spec, 0))
        cache.release()

    return timed(action)


def first_position(cache: LensCache, spec) -> float:
    lens = cache.acquire(spec, (spec, 0))
    try:
        inp, options = AnalysisInput(text=TEXT), AnalysisOptions(seed=1, salience=False)
        return timed(lambda: engine.analyze(lens, inp, options, remaining=[3]))
    finally:
        cache.release()


def measure(device: str, repeats: int, other) -> dict[str, list[float]]:
    """`other`: a lens of another base (the tiny test lens)."""
    second = dataclasses.replace(DEMO_SPEC, id="demo-second", default=False)
    times: dict[str, list[float]] = {}

    def note(label: str, seconds: float) -> None:
        times.setdefault(label, []).append(seconds)

    for _ in range(repeats):
        gc.collect()
        cache = fresh_cache(device, budget=64 * 1024**3)
        note("cold load from disk (demo lens)", use(cache, DEMO_SPEC))
        note("second lens of the same base (shared weights)", use(cache, second))
        use(cache, other)
        note("switch back from the CPU cache", use(cache, DEMO_SPEC))
        note(
            "first position, lens just back from the CPU cache",
            first_position_after_switch(cache, other, second),
        )
        note("first position, lens never left the device", first_position(cache, second))
        del cache
        gc.collect()
        nothing = fresh_cache(device, budget=0)
        use(nothing, DEMO_SPEC), use(nothing, other)  # the demo lens is let go, its base with it
        note("switch back with LENSWEB_CPU_CACHE_BYTES=0 (a new load)", use(nothing, DEMO_SPEC))
        del nothing
    return times


def first_position_after_switch(cache: LensCache, away, back) -> float:
    use(cache, away)
    cache.acquire(back, (back, 0))  # the switch itself, not timed here
    cache.release()
    return first_position(cache, back)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "fleet.md"))
    args = parser.parse_args()
    peak = matmul_gflops()
    tiny = build_tiny_lens(Path(tempfile.mkdtemp(prefix="lensweb-fleet-")))
    other = LensSpec(id="tiny", name="tiny", checkpoint=str(tiny.checkpoint), base_model=str(tiny.base))
    times = measure(args.device, args.repeats, other)
    cold = statistics.median(times["cold load from disk (demo lens)"])
    device_name = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    )
    lines = [
        "# Lens load and switch times (bench/fleet.py)",
        "",
        f"Device: {args.device} ({device_name}), torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"float32 matmul rate measured in the same run: {peak:.1f} GFLOP/s. Median of {args.repeats} runs; "
        "ratios to the cold load of the same run.",
        "",
        "| step | median s | min s | × cold load |",
        "|---|---:|---:|---:|",
    ]
    for label, values in times.items():
        median = statistics.median(values)
        lines.append(f"| {label} | {median:.3f} | {min(values):.3f} | {median / cold:.3f} |")
    lines += [
        "",
        f"(matmul rate again at the end: {matmul_gflops():.1f} GFLOP/s; far apart means the machine's load changed.)",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    Path(args.out).write_text(report)


if __name__ == "__main__":
    main()
