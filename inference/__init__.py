"""The lens engine: Consistency Lens inference with PyTorch + transformers. Knows nothing of Django.

Public surface: inference.engine, the one door (torch-free at import; README "Architecture"):
    engine.load_registry() -> LensRegistry       lenses from LENSWEB_LENS_REGISTRY (TOML) or the demo lens and NLA
    engine.load(spec)                            the lens of the spec's family (inference.families)
    engine.tokenizer(spec), engine.identity(spec)  cheap, without weights: bounds checks and cache keys
    engine.prepare_input(tokenizer, input, options)  token ids and positions to analyse
    engine.analyze(lens, input, options, ...)    rows per batch through on_batch; cancellable; deterministic
    engine.generate(lens, input, options)        continuations and chat replies
with the torch-free vocabulary beside it: types, rows, errors, limits, options.
"""

# Bumped whenever a change can alter any number or token a result holds; part of every cache key.
ENGINE_VERSION = "2"  # 2: rows carry cosine_similarity, activation_norm, activation_norm_outlier
