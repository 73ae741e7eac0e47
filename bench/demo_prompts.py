"""Demo-lens prompt choice: zero-training prompt pairs for the untrained SmolLM2 demo lens, measured.

Every candidate pair (decoder prompt with `<embed>`, encoder prompt with `<text>`; see inference/demo.py for
where each part goes) runs through the engine's own `analyze` on the fixed texts in bench/data/demo_texts.txt
with the default options (best_of_k 1, temperature 1.0, seed 42; salience off, as it changes neither metric):

- names: the share of content-word positions whose explanation names the token or a word of the same stem.
  A content-word position is a position p >= 1 whose token is a whole word (it starts a word and the next
  token does not continue it), all ASCII letters, at least 2 of them, and not a stopword (STOPWORDS below).
  Explanation words are its ASCII letter runs, lowercased; stems come from `stem`, a small suffix stripper.
- rel. RMSE: the mean of the engine's per-row relative RMSE, ||A - Â|| / ||A||, over every position but 0
  (position 0 is the attention sink: its activation's norm is several times the others' and says nothing
  about its token).

Explanations depend only on the decoder prompt (k = 1: nothing selects among them), so after the pairs the
script re-encodes every decoder's explanations with every encoder prompt (the engine's `encode`; the pairs'
own cells are checked against `analyze`'s rows), and reads T single-space tokens (the salience null token)
with every encoder as a baseline: what it reconstructs from its prompt and the current token alone.

The choice: the decoder prompt with the highest `names` (within 2 points, the lower rel. RMSE wins); then,
among the encoder prompts for which its explanations beat the blank baseline (so that an explanation, the
lens' own or one a user writes and scores, changes the score for the better), the one with the lowest
rel. RMSE; if none beats it, the lowest overall. A chosen pair that is not a candidate pair is run through
`analyze` as well.

Prints the tables and writes bench/results/demo-prompts.md.

usage: python bench/demo_prompts.py [--texts N] [--temperature T] [--seed S] [--threads N] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inference import demo  # noqa: E402
from inference.analysis import analyze  # noqa: E402
from inference.encoding import encode, mse, relative_rmse  # noqa: E402
from inference.engine import load  # noqa: E402
from inference.lens import Lens, _build_prefixes  # noqa: E402
from inference.metrics import orig_forward  # noqa: E402
from inference.registry import DEMO_SPEC  # noqa: E402
from inference.types import AnalysisInput, AnalysisOptions  # noqa: E402

TEXTS = ROOT / "bench" / "data" / "demo_texts.txt"
OUT = ROOT / "bench" / "results" / "demo-prompts.md"
BLANK = "(blank: T spaces)"  # the cross table's baseline row
TIE_POINTS = 2.0  # `names` differences up to this many percentage points count as a tie

CANDIDATES = (
    {
        "name": "research",
        "what": "the research prompts the trained lenses were initialised from "
        "(shipped until demo version 1)",
        "decoder": "Short explanation of <embed>. Language, topic, sentiment, claims, speaker, style, etc:",
        "encoder": "Summary of the text, encapsulating the main points and message, style and details:<text>",
    },
    {
        "name": "identity",
        "what": "Patchscopes' few-shot token identity; the encoder reads the current token as the answer",
        "decoder": "cat -> cat; 1135 -> 1135; hello -> hello; <embed> ->",
        "encoder": "cat -> cat; 1135 -> 1135; hello -> hello;<text> ->",
    },
    {
        "name": "selfie",
        "what": "SelfIE-style: the activation as the user's message in the chat template, 'explain this'",
        "decoder": "<|im_start|>user\n<embed><|im_end|>\n<|im_start|>assistant\nSure, I will explain that:",
        "encoder": "<|im_start|>assistant\nSure, I will explain that:<text>",
    },
    {
        "name": "gloss",
        "what": "ours: a few-shot dictionary that repeats the word, then glosses it",
        "decoder": 'Dictionary. "dog": dog, a pet that barks. "run": run, to move fast. '
        '"blue": blue, a colour. "<embed>":',
        "encoder": "Dictionary.<text>",
    },
)

# Function words, auxiliaries, pronouns and very common adverbs: positions whose token is one of these are
# not content words, and naming them would be cheap.
STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having
    he her here hers herself him himself his how i if in into is it its itself just me more most my myself no
    nor not now of off on once only or other our ours ourselves out over own same she should so some such than
    that the their theirs them themselves then there these they this those through to too under until up very
    was we were what when where which while who whom why will with would you your yours yourself yourselves
    shall may might must let lets get got go goes went us ll re ve don didn doesn isn wasn aren weren won
    """.split()  # noqa: SIM905 (a word list reads better as text)
)
SUFFIXES = ("sses", "ies", "ing", "ed", "es", "er", "ly", "s")
MIN_STEM = 3  # a suffix is stripped only if at least this many letters remain


def stem(word: str) -> str:
    """Lowercase and strip one suffix, then undouble a final consonant, drop a final e and turn a final y
    to i, so cats/cat, running/run, studies/study, baked/bake and played/plays/play meet."""
    w = word.lower()
    for suffix in SUFFIXES:
        if not w.endswith(suffix) or len(w) - len(suffix) < MIN_STEM:
            continue
        if suffix == "s" and w.endswith(("ss", "us", "is")):
            break  # glass, bus, this: the s is the word's own
        w = w[: -len(suffix)] + {"sses": "ss", "ies": "i"}.get(suffix, "")
        break
    if len(w) >= 4 and w[-1] == w[-2] and w[-1] not in "aeioulsz":
        w = w[:-1]  # runn -> run, stopp -> stop; fall, glass, buzz keep theirs
    if len(w) >= 3 and w.endswith("e"):
        w = w[:-1]
    if len(w) >= 3 and w.endswith("y"):
        w = w[:-1] + "i"
    return w


def content_positions(tokens: list[str]) -> list[int]:
    """Positions p >= 1 whose token is a whole content word (see the module docstring)."""
    found = []
    for p in range(1, len(tokens)):
        word = tokens[p].strip()
        starts_word = tokens[p][:1].isspace() or not _ends_with_letter(tokens[p - 1])
        ends_word = p + 1 == len(tokens) or not _starts_with_letter(tokens[p + 1])
        if (
            starts_word
            and ends_word
            and len(word) >= 2
            and word.isascii()
            and word.isalpha()
            and word.lower() not in STOPWORDS
        ):
            found.append(p)
    return found


def names_token(explanation: str, word: str) -> bool:
    target = word.strip().lower()
    target_stem = stem(target)
    return any(w == target or stem(w) == target_stem for w in re.findall(r"[a-z]+", explanation.lower()))


def _ends_with_letter(token: str) -> bool:
    return token[-1:].isalpha()


def _starts_with_letter(token: str) -> bool:
    return token[:1].isalpha()


# --- running the lens -------------------------------------------------------------------------------------


def variant(lens: Lens, decoder_prompt: str, encoder_prompt: str) -> Lens:
    """The loaded demo lens with other prompts: same model, new prompt tensors and shared prefixes."""
    ckpt = demo.demo_checkpoint(lens.model, lens.tokenizer, decoder_prompt, encoder_prompt)
    out = dataclasses.replace(lens, ckpt=ckpt.to(lens.device, lens.dtype), identity=ckpt.sha256[:32])
    _build_prefixes(out)
    return out


def run_pair(lens: Lens, texts: list[str], options: AnalysisOptions) -> list[dict]:
    """One record per text: its tokens, activations (for re-encoding) and analyze's rows."""
    records = []
    for text in texts:
        result = analyze(lens, AnalysisInput(text=text), options)
        ids = result.metadata["token_ids"]
        with torch.inference_mode():
            acts = orig_forward(lens, torch.tensor(ids, device=lens.device), full=False).acts.float()
        records.append(
            {
                "tokens": [lens.tokenizer.decode([i]) for i in ids],
                "ids": ids,
                "acts": acts,
                "rows": sorted(result.rows, key=lambda r: r["position"]),
            }
        )
    return records


def names_share(records: list[dict]) -> tuple[int, int]:
    hits = total = 0
    for rec in records:
        for p in content_positions(rec["tokens"]):
            total += 1
            hits += names_token(rec["rows"][p]["explanation"], rec["tokens"][p])
    return hits, total


def mean_rel_rmse(records: list[dict]) -> float:
    return statistics.fmean(r["relative_rmse"] for rec in records for r in rec["rows"] if r["position"] != 0)


def reencoded_rel_rmse(enc_lens: Lens, records: list[dict], blank: bool = False) -> float:
    """The decoder's explanations (from `records`) read by `enc_lens`' encoder: mean relative RMSE, p >= 1.
    `blank` reads T null tokens instead: what an encoder reconstructs from the current token alone."""
    values = []
    with torch.inference_mode():
        for rec in records:
            rows = [r for r in rec["rows"] if r["position"] != 0]
            pos = torch.tensor([r["position"] for r in rows], device=enc_lens.device)
            expl = torch.tensor([r["explanation_token_ids"] for r in rows], device=enc_lens.device)
            if blank:
                expl = torch.full_like(expl, enc_lens.null_token_id)
            current = torch.tensor(rec["ids"], device=enc_lens.device)[pos]
            acts = rec["acts"][pos]
            recon = encode(enc_lens, expl, current, chunk=256)
            values += relative_rmse(acts, mse(acts, recon)).tolist()
    return statistics.fmean(values)


def choose(pairs: list[dict], cross: dict[tuple[str, str], float]) -> tuple[str, str]:
    """The decoder with the most names (ties within TIE_POINTS: lower rel. RMSE), then its best encoder
    among those its explanations help (below their BLANK row). `cross`: (decoder, encoder) -> rel. RMSE."""
    best_names = max(p["names"] for p in pairs)
    near = [p for p in pairs if best_names - p["names"] <= TIE_POINTS]
    encoders = [p["name"] for p in pairs]

    def best_encoder(decoder_name: str) -> str:
        helped = [e for e in encoders if cross[(decoder_name, e)] < cross[(BLANK, e)]]
        return min(helped or encoders, key=lambda e: cross[(decoder_name, e)])

    decoder_name = min(near, key=lambda p: cross[(p["name"], best_encoder(p["name"]))])["name"]
    return decoder_name, best_encoder(decoder_name)


# --- report -----------------------------------------------------------------------------------------------


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def examples(records: list[dict], limit: int) -> list[str]:
    """The first content-word explanations of the first text, for a feel of what the prompts give; ✓ where
    the explanation names the token."""
    rec = records[0]
    out = []
    for p in content_positions(rec["tokens"])[:limit]:
        token, explanation = rec["tokens"][p], rec["rows"][p]["explanation"]
        shown = repr(explanation).replace("`", "'")  # repr: newlines stay visible; no backtick ends the span
        out.append(f"`{token.strip()}` → `{shown}`" + (" ✓" if names_token(explanation, token) else ""))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=None, help="only the first N texts (default: all)")
    parser.add_argument("--temperature", type=float, default=AnalysisOptions.temperature)
    parser.add_argument("--seed", type=int, default=AnalysisOptions.seed)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    all_texts = [line.strip() for line in TEXTS.read_text().splitlines() if line.strip()]
    texts = all_texts[: args.texts] if args.texts else all_texts
    options = AnalysisOptions(best_of_k=1, temperature=args.temperature, seed=args.seed, salience=False)

    t0 = time.perf_counter()
    base = load(DEMO_SPEC, device="cpu")
    print(f"loaded the demo lens in {time.perf_counter() - t0:.1f} s; {len(texts)} texts", flush=True)
    lenses = {c["name"]: variant(base, c["decoder"], c["encoder"]) for c in CANDIDATES}
    pairs, records = [], {}
    for cand in CANDIDATES:
        t0 = time.perf_counter()
        records[cand["name"]] = recs = run_pair(lenses[cand["name"]], texts, options)
        hits, total = names_share(recs)
        pairs.append(
            {
                **cand,
                "hits": hits,
                "total": total,
                "names": 100.0 * hits / total,
                "rel_rmse": mean_rel_rmse(recs),
                "seconds": time.perf_counter() - t0,
            }
        )
        p = pairs[-1]
        print(
            f"{p['name']:>9}: names {p['names']:.1f}% ({hits}/{total}), rel. RMSE {p['rel_rmse']:.4f}, "
            f"{p['seconds']:.0f} s",
            flush=True,
        )

    cross = {}
    for dec in CANDIDATES:
        for enc in CANDIDATES:
            cross[(dec["name"], enc["name"])] = reencoded_rel_rmse(lenses[enc["name"]], records[dec["name"]])
    for enc in CANDIDATES:
        cross[(BLANK, enc["name"])] = reencoded_rel_rmse(
            lenses[enc["name"]], records[enc["name"]], blank=True
        )
    for p in pairs:  # the same computation as analyze's: the diagonal must agree
        diagonal = cross[(p["name"], p["name"])]
        if abs(diagonal - p["rel_rmse"]) > 1e-4 * p["rel_rmse"]:
            raise SystemExit(
                f"re-encoding disagrees with analyze for {p['name']}: {diagonal} vs {p['rel_rmse']}"
            )
    decoder_name, encoder_name = choose(pairs, cross)
    by_name = {c["name"]: c for c in CANDIDATES}
    chosen = {
        "decoder_from": decoder_name,
        "encoder_from": encoder_name,
        "decoder": by_name[decoder_name]["decoder"],
        "encoder": by_name[encoder_name]["encoder"],
    }
    if decoder_name == encoder_name:
        recs = records[decoder_name]
    else:
        recs = run_pair(variant(base, chosen["decoder"], chosen["encoder"]), texts, options)
    hits, total = names_share(recs)
    chosen.update(
        names=100.0 * hits / total, hits=hits, total=total, rel_rmse=mean_rel_rmse(recs), records=recs
    )
    report = render(args, texts, all_texts, pairs, cross, chosen, records)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    print(f"wrote {args.out}")


def render(args, texts, all_texts, pairs, cross, chosen, records) -> str:
    names = [p["name"] for p in pairs]
    cut = "" if len(texts) == len(all_texts) else f" (the first {len(texts)} of {len(all_texts)})"
    lines = [
        "# Demo-lens prompts",
        "",
        f"Machine: {platform.machine()}, {_cpus()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), float32, CPU. Date: {datetime.date.today().isoformat()}. "
        f"Commit: {git_commit()}.",
        f"Texts: `bench/data/demo_texts.txt`, {len(texts)} texts{cut}. Options: best_of_k 1, temperature "
        f"{args.temperature:g}, seed {args.seed}, salience off. Produced by `python bench/demo_prompts.py`; "
        "the metrics are defined in its docstring.",
        "",
        "- **names**: share of content-word positions whose explanation names the token or a word of the "
        "same stem (higher is better).",
        "- **rel. RMSE**: mean relative RMSE ||A − Â|| / ||A|| over every position but 0 (lower is better).",
        "",
        "## Candidate pairs",
        "",
        "| pair | names | content-word positions named | rel. RMSE | seconds |",
        "|---|---|---|---|---|",
    ]
    for p in pairs:
        lines.append(
            f"| {p['name']} | **{p['names']:.1f}%** | {p['hits']}/{p['total']} | **{p['rel_rmse']:.4f}** | "
            f"{p['seconds']:.0f} |"
        )
    lines += [
        "",
        "## Every decoder's explanations read by every encoder (rel. RMSE)",
        "",
        "Explanations depend only on the decoder prompt, so each row re-encodes one decoder's explanations "
        "with each encoder prompt; the diagonal is the table above. The last row reads T single-space "
        "tokens (the salience null token) instead of an explanation: what each encoder gets from the current "
        "token and its prompt alone.",
        "",
        "| decoder \\ encoder | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for dec in [*names, BLANK]:
        lines.append(f"| {dec} | " + " | ".join(f"{cross[(dec, enc)]:.4f}" for enc in names) + " |")
    lines += [
        "",
        "## Choice",
        "",
        f"Decoder prompt from **{chosen['decoder_from']}** (most names; within {TIE_POINTS:g} points the "
        f"lower rel. RMSE), encoder prompt from **{chosen['encoder_from']}** (lowest rel. RMSE on those "
        "explanations among the encoders they beat the blank row with): "
        f"names **{chosen['names']:.1f}%** ({chosen['hits']}/{chosen['total']}), rel. RMSE "
        f"**{chosen['rel_rmse']:.4f}**, measured through `analyze`.",
        "",
        f"- chosen decoder prompt: `{_code(chosen['decoder'])}`",
        f"- chosen encoder prompt: `{_code(chosen['encoder'])}`",
        "",
        "What it says on the content words of the first three texts (token → explanation):",
        "",
        *[f"- {line}" for rec in chosen["records"][:3] for line in examples([rec], 10)],
        "",
        "## The prompts",
        "",
    ]
    for p in pairs:
        lines += [
            f"**{p['name']}**: {p['what']}.",
            "",
            f"- decoder: `{_code(p['decoder'])}`",
            f"- encoder: `{_code(p['encoder'])}`",
            "- first text's content words: " + "; ".join(examples(records[p["name"]], 4)),
            "",
        ]
    return "\n".join(lines)


def _code(prompt: str) -> str:
    """A prompt on one line of Markdown: newlines written as \\n, as in the Python source."""
    return prompt.replace("\n", "\\n")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


if __name__ == "__main__":
    main()
