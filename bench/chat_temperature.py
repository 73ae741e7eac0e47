"""Chat-reply temperature for the demo model (SmolLM2-135M-Instruct), measured.

Fixed short user questions with checkable answers (QUESTIONS below), each sent as a one-turn chat through the
engine's generation entry point (`inference.engine.generate`, as the web worker calls it: the lens' chat
template with its default system prompt, `chat_reply` on, stop at end-of-turn), at temperature 0 (greedy, a
reference row) and at several sampled temperatures, `--samples` replies per question and temperature (one
`generate` call with n = samples per seed, as the form's "Completions" asks; top-p 1.0).

Scores per temperature, over every reply:

- correct: the reply contains an expected answer (a whole word, case-insensitive: "Paris", "eight" or "8").
- end of turn: the reply ended at end-of-turn within `--max-new-tokens` (the engine's `finished`).
- degenerate: the reply is empty (no letter or digit), or a word 3-gram occurs 3 or more times in it (a loop).

The choice: the sampled temperature (> 0, so that replies differ) with the highest correct share; ties go to
more end-of-turn, then fewer degenerate, then the higher temperature (more variety). Greedy is chosen instead
only when its correct share beats that by more than GREEDY_MARGIN points.

Prints the table and writes bench/results/chat-temperature.md, with this machine's float32 matmul rate.

usage: python bench/chat_temperature.py [--questions N] [--samples N] [--seeds S ...] [--threads N] [--out FILE]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import platform
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.demo_prompts import git_commit  # noqa: E402
from bench.engine import matmul_gflops  # noqa: E402
from inference import engine  # noqa: E402
from inference.registry import DEMO_SPEC  # noqa: E402
from inference.types import AnalysisInput, GenerationOptions  # noqa: E402

OUT = ROOT / "bench" / "results" / "chat-temperature.md"
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
GREEDY_MARGIN = 15.0  # percentage points greedy must win by to be chosen over a sampled temperature

# (question, accepted answers): each answer a whole word, matched case-insensitively.
QUESTIONS = (
    ("What is the capital of France?", ("paris",)),
    ("What colour is the sky on a clear day?", ("blue",)),
    ("How many legs does a spider have?", ("eight", "8")),
    ("What is 2 + 3?", ("five", "5")),
    ("What is the opposite of hot?", ("cold",)),
    ("How many days are there in a week?", ("seven", "7")),
    ("What is the capital of Japan?", ("tokyo",)),
    ("Which animal says moo?", ("cow", "cows")),
    ("What is the opposite of up?", ("down",)),
    ("What colour is grass?", ("green",)),
    ("Which planet do we live on?", ("earth",)),
    ("What do bees make?", ("honey",)),
)


def contains_answer(reply: str, answers: tuple[str, ...]) -> bool:
    return any(re.search(rf"(?<![\w]){re.escape(a)}(?![\w])", reply, re.IGNORECASE) for a in answers)


def degenerate(reply: str, n: int = 3, repeats: int = 3) -> bool:
    """Empty, or a loop: some word n-gram occurs `repeats` times or more."""
    words = re.findall(r"\w+", reply.lower())
    if not words:
        return True
    grams = collections.Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return any(count >= repeats for count in grams.values())


def run(lens, questions, temperature: float, seeds, samples: int, max_new_tokens: int) -> dict:
    replies = []
    t0 = time.perf_counter()
    for question, answers in questions:
        inp = AnalysisInput(messages=({"role": "user", "content": question},))
        # greedy: one reply whatever the seed (the engine repeats it n times; one is enough here)
        for seed in seeds[:1] if temperature == 0 else seeds:
            options = GenerationOptions(
                n=1 if temperature == 0 else samples,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                seed=seed,
                chat_reply=True,
            )
            out = engine.generate(lens, inp, options)
            for sample in out["samples"]:
                replies.append(
                    {
                        "question": question,
                        "text": sample["text"],
                        "correct": contains_answer(sample["text"], answers),
                        "finished": bool(sample["finished"]),
                        "degenerate": degenerate(sample["text"]),
                    }
                )
    total = len(replies)
    return {
        "temperature": temperature,
        "replies": replies,
        "total": total,
        "correct": 100.0 * sum(r["correct"] for r in replies) / total,
        "finished": 100.0 * sum(r["finished"] for r in replies) / total,
        "degenerate": 100.0 * sum(r["degenerate"] for r in replies) / total,
        "seconds": time.perf_counter() - t0,
    }


def standard_error(percent: float, n: int) -> float:
    """A share's binomial standard error, in percentage points: how far apart two rows must be to differ."""
    p = percent / 100
    return 100 * (p * (1 - p) / n) ** 0.5


def choose(rows: list[dict]) -> tuple[float, str]:
    """(temperature, why) by the rule in the docstring."""
    sampled = [r for r in rows if r["temperature"] > 0]
    best = max(sampled, key=lambda r: (r["correct"], r["finished"], -r["degenerate"], r["temperature"]))
    greedy = next((r for r in rows if r["temperature"] == 0), None)
    if greedy is not None and greedy["correct"] > best["correct"] + GREEDY_MARGIN:
        return 0.0, (
            f"greedy's correct share ({greedy['correct']:.0f}%) beats the best sampled temperature's "
            f"({best['temperature']:g}: {best['correct']:.0f}%) by more than {GREEDY_MARGIN:g} points"
        )
    why = (
        f"the highest correct share among the sampled temperatures ({best['correct']:.0f}%; ties go to more "
        "end-of-turn, fewer degenerate, then the higher temperature)"
    )
    if greedy is not None:
        why += f"; greedy, the reference, has {greedy['correct']:.0f}%"
    error = standard_error(best["correct"], best["total"])
    close = [
        f"{r['temperature']:g}" for r in sampled if r is not best and best["correct"] - r["correct"] < error
    ]
    if close:
        why += (
            f". Within one standard error ({error:.0f} points) of it: T = {', '.join(close)}, so the correct "
            "shares alone do not separate them; the rule still needs one number, and this is it"
        )
    return best["temperature"], why


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=len(QUESTIONS), help="only the first N questions")
    parser.add_argument(
        "--samples", type=int, default=3, help="replies per seed (n) at a sampled temperature"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[GenerationOptions.seed])
    parser.add_argument("--temperatures", type=float, nargs="+", default=list(TEMPERATURES))
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (on a shared machine 1 suffers least)"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    questions = QUESTIONS[: args.questions]

    peak = matmul_gflops()
    print(
        f"float32 torch.matmul 2048x2048: {peak:.1f} GFLOP/s on {torch.get_num_threads()} threads", flush=True
    )
    t0 = time.perf_counter()
    lens = engine.load(DEMO_SPEC, device="cpu")
    print(f"loaded the demo lens in {time.perf_counter() - t0:.1f} s", flush=True)
    rows = []
    for temperature in args.temperatures:
        rows.append(run(lens, questions, temperature, args.seeds, args.samples, args.max_new_tokens))
        r = rows[-1]
        print(
            f"T={temperature:g}: correct {r['correct']:.0f}%, end of turn {r['finished']:.0f}%, "
            f"degenerate {r['degenerate']:.0f}% ({r['total']} replies, {r['seconds']:.0f} s)",
            flush=True,
        )
    chosen, why = choose(rows)
    seconds = time.perf_counter() - t0
    report = render(args, questions, rows, chosen, why, peak, matmul_gflops(), seconds)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    print(f"wrote {args.out}")


def render(args, questions, rows, chosen, why, peak, peak_end, seconds) -> str:
    seeds = ", ".join(str(s) for s in args.seeds)
    lines = [
        "# Chat-reply temperature (demo model)",
        "",
        f"Machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), float32, CPU; float32 matmul rate (2048x2048 torch.matmul) "
        f"**{peak:.1f} GFLOP/s** (again at the end: {peak_end:.1f}; far apart means the machine's load changed). "
        f"Date: {datetime.date.today().isoformat()}. Commit: {git_commit()}.",
        f"Model: the demo lens' SmolLM2-135M-Instruct through `inference.engine.generate` (chat template with "
        f"its default system prompt, `chat_reply` on, stop at end-of-turn). {len(questions)} one-turn "
        f"questions; greedy once each, sampled temperatures {args.samples} replies per question per seed "
        f"(seeds {seeds}); max_new_tokens {args.max_new_tokens}, top-p 1.0. Produced by "
        f"`python bench/chat_temperature.py{''.join(' ' + a for a in sys.argv[1:])}` in {seconds / 60:.1f} min (load and replies); the scores are "
        "defined in its docstring.",
        "",
        "| temperature | replies | correct (± 1 s.e.) | end of turn | degenerate | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = f"{r['temperature']:g}" + (" (greedy)" if r["temperature"] == 0 else "")
        if r["temperature"] == chosen:
            name = f"**{name}** (chosen)"
        lines.append(
            f"| {name} | {r['total']} | **{r['correct']:.0f}%** ± {standard_error(r['correct'], r['total']):.0f} | "
            f"{r['finished']:.0f}% | "
            f"{r['degenerate']:.0f}% | {r['seconds']:.0f} |"
        )
    lines += [
        "",
        f"**Chosen chat-reply default: {chosen:g}**: {why}. Plain continuations keep 1.0. The default lives in "
        "`inference/types.py` (`CHAT_TEMPERATURE`); an explicit temperature always wins.",
        "",
        "## The questions",
        "",
        "| question | accepted | " + " | ".join(f"T={r['temperature']:g}" for r in rows) + " |",
        "|---|---|" + "---|" * len(rows),
    ]
    for question, answers in questions:
        cells = []
        for r in rows:
            mine = [x for x in r["replies"] if x["question"] == question]
            cells.append(f"{sum(x['correct'] for x in mine)}/{len(mine)}")
        lines.append(f"| {question} | {', '.join(answers)} | " + " | ".join(cells) + " |")
    lines += ["", "## First reply per question (greedy and the chosen temperature)", ""]
    for r in rows:
        if r["temperature"] not in (0.0, chosen):
            continue
        lines += [f"T={r['temperature']:g}:", ""]
        seen = set()
        for x in r["replies"]:
            if x["question"] in seen:
                continue
            seen.add(x["question"])
            text = " ".join(x["text"].split()).replace("|", "\\|")
            mark = "✓" if x["correct"] else "✗"
            lines.append(f"- {x['question']} {mark} {text}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
