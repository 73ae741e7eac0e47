"""The lens engine: Consistency Lens inference with PyTorch + transformers. Knows nothing of Django.

Public surface (see README "Architecture"):
    registry.load_registry() -> LensRegistry       lenses from LENSWEB_LENS_REGISTRY (TOML) or the demo lens
    lens.load_lens(spec) -> Lens                   base model(s), decoder/encoder tensors, tokenizer
    lens.load_tokenizer(spec)                      the tokenizer alone (cheap; for bounds checks in web processes)
    analysis.prepare_input(tokenizer, input, options)  token ids and positions to analyse
    analysis.analyze(lens, input, options, ...)    rows per batch through on_batch; cancellable; deterministic
    generation.generate(lens, input, options)      continuations and chat replies
"""

# Bumped whenever a change can alter any number or token a result holds; part of every cache key.
ENGINE_VERSION = "2"  # 2: rows carry cosine_similarity, activation_norm, activation_norm_outlier
