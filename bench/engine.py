"""Engine benchmark: the demo lens on ~16/64/256-token texts at k = 1 and 8 (salience on), and the golden
smol_L8_patch4 lens on the golden README's 64-token paragraph at k = 8, temperature 1.0, the case the research
code takes ~120 s for on this machine. Beside them, in the same run, the SmolLM2 NLA pair of golden-nla
(K = 8, rebuilt into the model cache as the tests do) on the same texts: explanations of max_new_tokens = 32
(the golden's setting; the untrained AV never stops earlier), salience on.

Prints a table and writes bench/results/engine.md. Besides seconds, it reports the fraction of this machine's
float32 matmul rate (a large torch.matmul timed in the same run) that the model FLOPs the work needs reach.

The int8 table times the demo lens with LENSWEB_CPU_QUANT=int8 beside float32 and gives the fidelity cost. A
ratio to the research code is written only when `--research-cmd` times it alternately in the same run.

usage: python bench/engine.py [--quick] [--golden-dir DIR] [--nla-only] [--threads N] [--research-cmd CMD]
       [--no-int8]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inference.analysis import analyze, default_rows_budget  # noqa: E402
from inference.engine import load  # noqa: E402
from inference.models import blocks, hidden_size, num_layers  # noqa: E402
from inference.nla_analysis import default_rows_budget as default_nla_rows_budget  # noqa: E402
from inference.registry import DEMO_SPEC, LensSpec  # noqa: E402
from inference.types import AnalysisInput, AnalysisOptions  # noqa: E402

P64 = (
    "The old lighthouse keeper climbed the spiral stairs every evening, carrying a brass lantern and a thermos "
    "of sweet tea. From the top he could see the fishing boats returning to the harbour, their lights flickering "
    "like fireflies against the darkening sea. He wrote each name in a worn leather notebook before going to sleep."
)
PROSE = (
    P64
    + " In winter the storms came in from the west, and the waves broke so high against the rocks that spray "
    "reached the gallery windows. The keeper's daughter, who had grown up counting the seconds between the "
    "flashes, now worked in the city as an engineer; she wrote to him every week about bridges and tunnels, and "
    "he answered with the names of the boats. When the coast guard finally automated the light, he refused to "
    "leave, and the inspectors, who had all learned to fish from him as boys, quietly let him stay. Visitors "
    "still climb the stairs on Sundays, and some of them find the notebook on the desk, open at the last page, "
    "where the final entry reads only: all home, calm sea. Nobody knows who keeps adding the new names."
)


def text_of_tokens(tokenizer, n: int) -> str:
    ids = tokenizer(PROSE * 4, add_special_tokens=False).input_ids[:n]
    return tokenizer.decode(ids)


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * size**3 / min(times) / 1e9


def block_matrix_params(model) -> int:
    return sum(p.numel() for p in blocks(model)[0].parameters() if p.dim() == 2)


def work_flops(lens, n_tokens: int, k: int, salience: bool) -> float:
    """Model FLOPs the analysis needs (matmuls: 2 per weight per token, plus attention scores and mixing)."""
    m = lens.model
    d, n_blocks = hidden_size(m), num_layers(m)
    per_token_block = 2 * block_matrix_params(m)
    head = 2 * m.config.vocab_size * d
    dec, enc = lens.ckpt.decoder, lens.ckpt.encoder
    n_left, n_right, t = dec.prompt_left.shape[0], dec.prompt_right.shape[0], lens.t_text
    p_len = n_left + 1 + n_right
    enc_len = t + (0 if enc.soft_prompt_postfix is None else enc.soft_prompt_postfix.shape[0]) + 1
    enc_blocks = lens.ckpt.output_layer + 1
    enc_ctx = enc.soft_prompt.shape[0] + enc_len

    def attn(ctx):  # QK^T and AV over `ctx` keys, per token per block
        return 4 * ctx * d

    flops = n_tokens * (lens.layer + 1) * (per_token_block + attn(n_tokens / 2))  # activations
    flops += n_tokens * ((1 + n_right) * n_blocks * (per_token_block + attn(p_len)) + head)  # prefill
    flops += n_tokens * k * (t - 1) * (n_blocks * (per_token_block + attn(p_len + t)) + head)  # decode
    enc_rows = n_tokens * k + (n_tokens * t if salience else 0)
    flops += enc_rows * enc_len * enc_blocks * (per_token_block + attn(enc_ctx))  # encoder (+ salience)
    return flops


def nla_work_flops(nla, result) -> float:
    """Model FLOPs an NLA analysis needed, counted from its rows (keep_candidates on): the base to block K,
    each position's AV prompt suffix after the shared prefix, one AV step per generated token (and per EOS),
    the AR (blocks 0..K) on every candidate's and every salience ablation's prompt, the value head."""
    from inference.nla_analysis import ar_input_ids
    from inference.nla_format import explanation_words, without_word

    d, vocab = nla.cfg.d_model, nla.av.config.vocab_size
    n_text = result.metadata["n_tokens"]
    prompt, p = len(nla.prompt_ids), nla.injection_position

    def per_block(model):
        return 2 * block_matrix_params(model)

    def attn(ctx):
        return 4 * ctx * d

    av_blocks, ar_blocks, head = num_layers(nla.av), nla.cfg.layer + 1, 2 * vocab * d
    flops = n_text * ar_blocks * (per_block(nla.base) + attn(n_text / 2))  # activations
    rows = result.rows
    flops += len(rows) * ((prompt - p) * av_blocks * (per_block(nla.av) + attn(prompt)) + head)  # prefill
    ar_lengths = []
    for row in rows:
        for cand in row["candidates"]:
            steps = len(cand["explanation_token_ids"]) + (row["av_stop"] == "eos")
            flops += max(0, steps - 1) * (av_blocks * (per_block(nla.av) + attn(prompt + steps / 2)) + head)
            ar_lengths.append(len(ar_input_ids(nla, cand["explanation"])))
        if row["token_salience"] is not None:
            words = explanation_words(row["explanation"])
            ar_lengths += [len(ar_input_ids(nla, without_word(words, j))) for j in range(len(words))]
    for length in ar_lengths:
        flops += length * ar_blocks * (per_block(nla.ar) + attn(length / 2)) + 2 * d * d
    return flops


def run_case(lens, text, k, repeats, label, nla_steps=None):
    opts = AnalysisOptions(best_of_k=k, temperature=1.0, seed=42, salience=True)
    if nla_steps is not None:  # the rows must name every candidate for nla_work_flops to count them
        opts = AnalysisOptions(best_of_k=k, temperature=1.0, seed=42, salience=True, keep_candidates=True)
    inp = AnalysisInput(text=text)
    analyze(lens, AnalysisInput(text=text[:40]), opts)  # warm-up
    runs, results = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        results.append(analyze(lens, inp, opts))
        runs.append(time.perf_counter() - t0)
    sec = statistics.median(runs)
    result = results[runs.index(sec)] if sec in runs else results[-1]  # the median run's own breakdown
    n = len(result.rows)
    flops = nla_work_flops(lens, result) if nla_steps is not None else work_flops(lens, n, k, salience=True)
    return {
        "case": label,
        "tokens": n,
        "k": k,
        "runs": runs,
        "seconds": sec,
        "pos_per_s": n / sec,
        "gflop": flops / 1e9,
        "timings": result.timings,
    }


NLA_STEPS = 32


def nla_pair_spec(golden: Path):
    """The SmolLM2 NLA pair of golden-nla, rebuilt once into the model cache (tests/inference/nla_fixtures)."""
    nla_golden = golden.parent / "golden-nla"
    if not (nla_golden / "smol" / "av" / "nla_meta.yaml").is_file():
        return None
    from inference.demo_base import ensure_demo_base
    from tests.inference.nla_fixtures import smol_spec

    return smol_spec(ensure_demo_base(), max_new_tokens=NLA_STEPS)


def fmt_table(rows, peak):
    out = [
        "| case | tokens | k | runs (s) | median s | positions/s | model GFLOP | GFLOP/s | % of matmul peak | "
        "decode / encode / salience s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rate = r["gflop"] / r["seconds"]
        tm = r["timings"]
        out.append(
            f"| {r['case']} | {r['tokens']} | {r['k']} | {', '.join(f'{x:.2f}' for x in r['runs'])} | "
            f"**{r['seconds']:.2f}** | {r['pos_per_s']:.1f} | {r['gflop']:.0f} | {rate:.1f} | "
            f"{100 * rate / peak:.0f}% | {tm['decode']:.1f} / {tm['encode']:.1f} / {tm['salience']:.1f} |"
        )
    return "\n".join(out)


def int8_side_by_side(text: str, repeats: int, peak: float) -> list[str]:
    """The demo lens in float32 and with LENSWEB_CPU_QUANT=int8 (inference.quant), timed alternately in this
    run, and the int8 rows' fidelity to float32: in the benchmark's own setting (sampled, salience on) and
    greedy (temperature 0), where a changed explanation is the quantisation's doing, not a sample's."""
    previous = os.environ.get("LENSWEB_CPU_QUANT", "")
    lenses = {}
    for quant in ("", "int8"):
        os.environ["LENSWEB_CPU_QUANT"] = quant
        lenses[quant or "float32"] = load(DEMO_SPEC, device="cpu")
    os.environ["LENSWEB_CPU_QUANT"] = previous
    inp = AnalysisInput(text=text)
    lines = [
        "## int8 on the CPU (LENSWEB_CPU_QUANT=int8), side by side with float32",
        "",
        f"The demo lens on the same {len(lenses['float32'].tokenizer(text).input_ids)}-token text, the two timed "
        f"alternately in this run (median of {repeats}); float32 matmul rate {peak:.1f} GFLOP/s. Fidelity: mean "
        "|Δmse| as a share of float32's mean mse, and the share of explanations identical to float32's.",
        "",
        "| k | float32 s | int8 s | speed-up | sampled: mean abs Δmse | sampled: identical | greedy: mean abs Δmse "
        "| greedy: identical |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k in (1, 8):
        sampled = AnalysisOptions(best_of_k=k, temperature=1.0, seed=42, salience=True)
        greedy = AnalysisOptions(best_of_k=1, temperature=0.0, salience=False)
        times = {"float32": [], "int8": []}
        rows = {}
        for lens in lenses.values():
            analyze(lens, AnalysisInput(text=text[:40]), sampled)  # warm-up
        for _ in range(repeats):
            for name, lens in lenses.items():
                t0 = time.perf_counter()
                rows[name] = analyze(lens, inp, sampled).rows
                times[name].append(time.perf_counter() - t0)
        exact = {name: analyze(lens, inp, greedy).rows for name, lens in lenses.items()}
        f32, i8 = statistics.median(times["float32"]), statistics.median(times["int8"])
        lines.append(
            f"| {k} | {f32:.2f} | {i8:.2f} | **{f32 / i8:.2f}x** | {fidelity(rows)} | {fidelity(exact)} |"
        )
    return lines


def fidelity(rows: dict) -> str:
    a, b = rows["float32"], rows["int8"]
    mean_mse = statistics.mean(r.mse for r in a)
    drift = statistics.mean(abs(x.mse - y.mse) for x, y in zip(a, b, strict=True))
    same = sum(x.explanation == y.explanation for x, y in zip(a, b, strict=True)) / len(a)
    return f"{100 * drift / mean_mse:.1f}% | {100 * same:.0f}%"


def timed_side_by_side(lens, text: str, repeats: int, command: str) -> dict:
    """The golden case and the research code's command, alternately, in this run: the only ratio to quote."""
    opts = AnalysisOptions(best_of_k=8, temperature=1.0, seed=42, salience=True)
    engine_s, research_s = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        analyze(lens, AnalysisInput(text=text), opts)
        engine_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run(command, shell=True, check=True, capture_output=True)
        research_s.append(time.perf_counter() - t0)
    return {"engine": engine_s, "research": research_s}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one run per case, 16 and 64 tokens only")
    ap.add_argument(
        "--golden-dir", default=os.environ.get("LENSWEB_GOLDEN_DIR", str(ROOT.parent / "shared/golden"))
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "engine.md"))
    ap.add_argument("--nla-only", action="store_true", help="the NLA rows (and the golden CL row) only")
    ap.add_argument("--threads", type=int, help="torch threads (on a shared machine 1 suffers least)")
    ap.add_argument(
        "--research-cmd",
        help="a shell command that runs the research code on the golden case (e.g. its venv's python and "
        "script); timed alternately with the engine in this run, the only research ratio this writes",
    )
    ap.add_argument("--no-int8", action="store_true", help="skip the int8-against-float32 table")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else 3

    peak = matmul_gflops()
    print(
        f"float32 torch.matmul 2048x2048: {peak:.1f} GFLOP/s on {torch.get_num_threads()} threads", flush=True
    )
    results = []

    golden = Path(args.golden_dir)
    if (golden / "checkpoints" / "smol_L8_patch4.pt").exists():
        from inference.demo_base import ensure_demo_base

        spec = LensSpec(
            id="smol_L8_patch4",
            name="golden smol_L8_patch4",
            checkpoint=str(golden / "checkpoints" / "smol_L8_patch4.pt"),
            base_model=str(ensure_demo_base()),
        )
        lens = load(spec, device="cpu")
        r = run_case(lens, P64, 8, repeats, "golden smol_L8_patch4, P64")
        if args.research_cmd:
            side = timed_side_by_side(lens, P64, repeats, args.research_cmd)
            r["research"] = side
        results.append(r)
        print(fmt_table(results[-1:], peak), flush=True)
        del lens
    else:
        print(f"(golden folder not found at {golden}: skipping the research-code comparison)")

    nla_spec = nla_pair_spec(golden)
    if nla_spec is not None:
        nla = load(nla_spec, device="cpu")
        cases = [(16, 1)] if args.quick else [(16, 1), (64, 1)]
        for n, k in cases:
            text = P64 if n == 64 else text_of_tokens(nla.tokenizer, n)
            label = f"SmolLM2 NLA pair (K=8), {'P64' if n == 64 else f'{n} tokens'}"
            results.append(run_case(nla, text, k, repeats, label, nla_steps=NLA_STEPS))
            print(fmt_table(results[-1:], peak), flush=True)
        nla_rows_budget = default_nla_rows_budget(nla, NLA_STEPS)
        del nla
    else:
        print(f"(golden-nla folder not found beside {golden}: skipping the NLA rows)")

    demo = load(DEMO_SPEC, device="cpu")
    sizes = () if args.nla_only else (16, 64) if args.quick else (16, 64, 256)
    for n in sizes:
        text = text_of_tokens(demo.tokenizer, n)
        for k in (1, 8):
            results.append(run_case(demo, text, k, repeats, f"demo, {n} tokens"))
            print(fmt_table(results[-1:], peak), flush=True)

    lines = [
        "# Engine benchmark",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, float32, CPU. Rows budget per batch: "
        f"{default_rows_budget(demo)} (NLA: "
        f"{nla_rows_budget if nla_spec is not None else '-'}). Salience on, temperature 1.0, seed 42; median of "
        f"{repeats} run(s) after a warm-up.",
        f"float32 matmul rate measured in the same run (2048x2048 torch.matmul): **{peak:.1f} GFLOP/s** "
        f"(again at the end: {matmul_gflops():.1f} GFLOP/s; far apart means the machine's load changed).",
        "",
        fmt_table(results, peak),
        "",
    ]
    ref = [r for r in results if "research" in r]
    if ref:
        side = ref[0]["research"]
        engine_s, research_s = statistics.median(side["engine"]), statistics.median(side["research"])
        lines += [
            f"Research code on the golden case, timed alternately with the engine in this run ({len(side['engine'])}"
            f" each; `--research-cmd`): research {research_s:.1f} s, engine {engine_s:.2f} s: "
            f"**{research_s / engine_s:.1f}x**, with the float32 matmul rate at {peak:.1f} GFLOP/s.",
            "",
        ]
    else:
        lines += [
            "The research code was not timed in this run (`--research-cmd` times it alternately with the engine); "
            "a ratio to it is quoted only from such a run. Measured side by side within one hour on this machine "
            "kind (2026-12): 5.3–6.0x.",
            "",
        ]
    if not args.no_int8:
        lines += [*int8_side_by_side(P64, repeats, peak), ""]
    lines += [
        "Model GFLOP counts what the work needs: the activation pass to block l, one decoder prefill per position "
        "(slot + right prompt; the left prompt's K/V are shared), T-1 decode steps and T LM-head calls per rollout, "
        "the encoder to block output_layer for every rollout and every salience ablation (the soft prompt's K/V "
        "are shared). 2 FLOPs per weight per token plus attention.",
        "",
        "NLA rows: the base to block K once per text; per position the AV prompt from the marker on (the 117 "
        f"tokens before it are shared K/V), one AV step (30 blocks + LM head) per generated token, up to "
        f"max_new_tokens = {NLA_STEPS}; the AR (blocks 0..K = 9 of 30) on each candidate's filled template "
        "and, for salience, once per explanation word with that word removed (a whole AR prompt each: "
        "salience is most of an NLA row's work on a CPU). FLOPs counted from the rows themselves.",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
