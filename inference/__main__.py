"""Command line: `python -m inference analyze|generate …` (for researchers and for checks)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from .errors import LensError
from .limits import Limits
from .options import options_of
from .registry import DEMO_SPEC, LensSpec
from .types import AnalysisInput, AnalysisOptions, GenerationOptions

CLI_LIMITS = Limits(max_tokens=8192, max_text_chars=200_000)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except LensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m inference", description=__doc__)
    sub = ap.add_subparsers(required=True)

    an = sub.add_parser("analyze", help="explain every token of a text")
    _lens_args(an)
    _input_args(an)
    _option_args(an, AnalysisOptions)
    an.add_argument("--rows-budget", type=int, help="rows (positions x k) per batch")
    an.add_argument(
        "--max-new-tokens", type=int, help="NLA only: the longest explanation (default: the lens' setting)"
    )
    an.add_argument(
        "--nla-baseline-rawvar", type=float, help="NLA only: fve_nrm's variance constant (else the sidecar's)"
    )
    an.add_argument(
        "--score",
        type=int,
        metavar="POSITION",
        help="score your own explanation (--explanation or --explanation-ids) at this position instead",
    )
    words = an.add_mutually_exclusive_group()
    words.add_argument("--explanation", help="with --score: the explanation to score, as text")
    words.add_argument("--explanation-ids", type=int, nargs="+", help="with --score: its token ids")
    an.add_argument("--json", action="store_true", help="one JSON object {metadata, rows}")
    an.set_defaults(func=_analyze)

    gen = sub.add_parser("generate", help="continue a text, or reply to a chat")
    _lens_args(gen)
    _input_args(gen)
    # temperature unset: the default of what is asked for (a chat reply's CHAT_TEMPERATURE, or a continuation's)
    _option_args(gen, GenerationOptions, unset=("temperature",))
    gen.add_argument("--json", action="store_true")
    gen.set_defaults(func=_generate)
    return ap


def _option_args(ap, cls, unset: tuple[str, ...] = ()) -> None:
    """A flag per declared option (inference.options): `--best-of-k 4`, `--no-salience`, `--positions 3 -1`;
    those in `unset` default to None (their help says what a missing value means)."""
    for opt in options_of(cls):
        flag = "--" + opt.name.replace("_", "-")
        default = None if opt.name in unset else opt.default
        said = "" if opt.name in unset else f"; default {opt.default}"
        help_text = f"{opt.described(CLI_LIMITS).rstrip('.')}{said}".replace("%", "%%")
        if opt.kind == "bool":
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif opt.kind == "ints":
            ap.add_argument(flag, type=int, nargs="+", default=default, help=help_text)
        else:
            kind = int if opt.kind == "int" else float
            ap.add_argument(flag, type=kind, default=default, help=help_text)


def _options(args, cls):
    """The declared options of `cls` from parsed flags."""
    return cls(**{opt.name: getattr(args, opt.name) for opt in options_of(cls)})


def _lens_args(ap):
    ap.add_argument(
        "--checkpoint",
        required=True,
        help='a research .pt, a directory (newest *.pt), "demo", or an NLA folder holding av/ and ar/',
    )
    ap.add_argument("--base-model", help="HF directory or name; overrides the checkpoint's model_name")
    ap.add_argument("--donor-model", help="a fine-tune of the same architecture that plays orig")
    ap.add_argument("--device")


def _input_args(ap):
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--text")
    group.add_argument("--messages", help='chat JSON: [{"role": "user", "content": "…"}, …]')


def _load(args):
    from .engine import load
    from .nla import is_nla_folder

    nla_only = {"max_new_tokens": "--max-new-tokens", "nla_baseline_rawvar": "--nla-baseline-rawvar"}
    if args.checkpoint != "demo" and is_nla_folder(args.checkpoint):
        if args.donor_model:
            raise SystemExit("--donor-model: an NLA explains its base model (--base-model)")
        spec = LensSpec(
            id="cli",
            name=args.checkpoint,
            checkpoint=args.checkpoint,
            base_model=args.base_model,
            kind="nla",
            nla_baseline_rawvar=getattr(args, "nla_baseline_rawvar", None),
        )
    elif args.func is _analyze and any(getattr(args, key, None) is not None for key in nla_only):
        given = [flag for key, flag in nla_only.items() if getattr(args, key, None) is not None]
        raise SystemExit(f"{', '.join(given)}: for NLA folders (holding av/ and ar/) only")
    elif args.checkpoint == "demo":
        spec = DEMO_SPEC
    else:
        spec = LensSpec(
            id="cli",
            name=args.checkpoint,
            checkpoint=args.checkpoint,
            base_model=args.base_model,
            donor_model=args.donor_model,
        )
    return load(spec, device=args.device)


def _input(args) -> AnalysisInput:
    if args.messages is None:
        return AnalysisInput(text=args.text)
    try:
        return AnalysisInput(messages=json.loads(args.messages))
    except json.JSONDecodeError as exc:
        raise SystemExit(f"--messages is not valid JSON: {exc}") from None


def _analyze(args) -> int:
    from .driver import analyze

    options = _options(args, AnalysisOptions).validate(CLI_LIMITS)
    if (args.score is None) != (args.explanation is None and args.explanation_ids is None):
        raise SystemExit("--score POSITION goes with --explanation or --explanation-ids, and they with it")
    lens = _load(args)  # --max-new-tokens is refused there for all but an NLA
    if args.score is not None:
        return _score(args, lens, options)
    result = analyze(
        lens,
        _input(args),
        options,
        rows_budget=args.rows_budget,
        limits=CLI_LIMITS,
        max_new_tokens=args.max_new_tokens,
    )
    if args.json:
        json.dump(
            {"metadata": {**result.metadata, "timings": result.timings}, "rows": result.to_dict()["rows"]},
            sys.stdout,
        )
        sys.stdout.write("\n")
    else:
        _print_table(result)
    return 0


def _score(args, lens, options) -> int:
    from .driver import score

    row = score(
        lens,
        _input(args),
        options,
        args.score,
        explanation=args.explanation,
        explanation_token_ids=args.explanation_ids,
        limits=CLI_LIMITS,
    )
    if args.json:
        json.dump(row.to_dict(), sys.stdout)
        sys.stdout.write("\n")
        return 0
    numbers = ["mse", "relative_rmse", "cosine_similarity", "mse_nrm", "fve_nrm", "kl"]
    shown = "  ".join(f"{name}={row[name]:.4f}" for name in numbers if row.get(name) is not None)
    print(f"{row.position:>4}  {row.token!r}  {shown}  {row.explanation!r}")
    if row.token_salience is not None:
        print(
            "      salience: "
            + "  ".join(
                f"{w!r} {s:+.3f}" for w, s in zip(row.explanation_tokens, row.token_salience, strict=True)
            )
        )
    return 0


def _print_table(result) -> None:
    meta = result.metadata
    if meta.get("kind") == "nla":
        _print_nla_table(result)
        return
    print(f"# {meta['name']}  layer {meta['layer']}  T={meta['t_text']}  k={meta['options']['best_of_k']}")
    header = f"{'pos':>4}  {'token':<14} {'mse':>10} {'rel_rmse':>8}  explanation"
    print(header)
    for row in result.rows:
        extra = ""
        if row["kl"] is not None:
            extra += f"  kl={row['kl']:.4f}"
        if row["logit_lens_top"]:
            extra += "  lens: " + " ".join(repr(t) for t in row["logit_lens_top"][:3])
        print(
            f"{row['position']:>4}  {row['token']!r:<14} {row['mse']:>10.4f} {row['relative_rmse']:>8.4f}  "
            f"{row['explanation']!r}{extra}"
        )
    print(f"# {len(result.rows)} rows, {result.status}, {result.timings.get('total', 0):.2f} s")


def _print_nla_table(result) -> None:
    meta = result.metadata
    print(
        f"# NLA {meta['name']}  layer {meta['layer']}  max_new_tokens={meta['max_new_tokens']}  "
        f"k={meta['options']['best_of_k']}"
    )
    print(f"{'pos':>4}  {'token':<14} {'mse_nrm':>8} {'cos':>7} {'fve_nrm':>8}  explanation")
    for row in result.rows:
        fve = "-" if row["fve_nrm"] is None else f"{row['fve_nrm']:.4f}"
        print(
            f"{row['position']:>4}  {row['token']!r:<14} {row['mse_nrm']:>8.4f} {row['cosine_similarity']:>7.4f} "
            f"{fve:>8}  {row['explanation']!r}"
        )
    print(f"# {len(result.rows)} rows, {result.status}, {result.timings.get('total', 0):.2f} s")


def _generate(args) -> int:
    from .generation import generate

    given = {
        opt.name: value
        for opt in options_of(GenerationOptions)
        if (value := getattr(args, opt.name)) is not None
    }
    options = GenerationOptions.from_dict(given, chat=args.messages is not None)
    lens = _load(args)
    t0 = time.perf_counter()
    out = generate(lens, _input(args), options, limits=CLI_LIMITS)
    out["seconds"] = time.perf_counter() - t0
    if args.json:
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
    else:
        for i, sample in enumerate(out["samples"]):
            print(f"--- sample {i + 1}{' (end of turn)' if sample['finished'] else ''}")
            print(sample["text"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
