"""Engine benchmark: the demo lens on ~16/64/256-token texts at k = 1 and 8 (salience on), and the golden
smol_L8_patch4 lens on the golden README's 64-token paragraph at k = 8, temperature 1.0, the case the research
code takes ~120 s for on this machine.

Prints a table and writes bench/results/engine.md. Besides seconds, it reports the fraction of this machine's
float32 matmul rate (a large torch.matmul timed in the same run) that the model FLOPs the work needs reach.

usage: python bench/engine.py [--quick] [--golden-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inference.analysis import analyze, default_rows_budget  # noqa: E402
from inference.lens import load_lens  # noqa: E402
from inference.models import blocks, hidden_size, num_layers  # noqa: E402
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


def run_case(lens, text, k, repeats, label):
    opts = AnalysisOptions(best_of_k=k, temperature=1.0, seed=42, salience=True)
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
    return {
        "case": label,
        "tokens": n,
        "k": k,
        "runs": runs,
        "seconds": sec,
        "pos_per_s": n / sec,
        "gflop": work_flops(lens, n, k, salience=True) / 1e9,
        "timings": result.timings,
    }


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one run per case, 16 and 64 tokens only")
    ap.add_argument(
        "--golden-dir", default=os.environ.get("LENSWEB_GOLDEN_DIR", str(ROOT.parent / "shared/golden"))
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "engine.md"))
    args = ap.parse_args()
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
        lens = load_lens(spec, device="cpu")
        r = run_case(lens, P64, 8, repeats, "golden smol_L8_patch4, P64")
        r["reference_s"] = 120.37
        results.append(r)
        print(fmt_table(results[-1:], peak), flush=True)
    else:
        print(f"(golden folder not found at {golden}: skipping the research-code comparison)")

    demo = load_lens(DEMO_SPEC, device="cpu")
    sizes = (16, 64) if args.quick else (16, 64, 256)
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
        f"{default_rows_budget(demo)}. Salience on, temperature 1.0, seed 42; median of {repeats} run(s) after a "
        "warm-up.",
        f"float32 matmul rate measured in the same run (2048x2048 torch.matmul): **{peak:.1f} GFLOP/s**.",
        "",
        fmt_table(results, peak),
        "",
    ]
    ref = [r for r in results if "reference_s" in r]
    if ref:
        r = ref[0]
        lines += [
            f"Research code on the same case (golden README §9, this machine kind): {r['reference_s']:.1f} s. "
            f"Engine: {r['seconds']:.2f} s, **{r['reference_s'] / r['seconds']:.1f}x faster**, at "
            f"{100 * r['gflop'] / r['seconds'] / peak:.0f}% of the matmul rate for the FLOPs the work needs.",
            "",
        ]
    lines += [
        "Model GFLOP counts what the work needs: the activation pass to block l, one decoder prefill per position "
        "(slot + right prompt; the left prompt's K/V are shared), T-1 decode steps and T LM-head calls per rollout, "
        "the encoder to block output_layer for every rollout and every salience ablation (the soft prompt's K/V "
        "are shared). 2 FLOPs per weight per token plus attention.",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
