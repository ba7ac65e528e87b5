"""crdiff-search."""


def __getattr__(name):  # lazy: `import crdiff_search` stays light (no torch, no diffusers)
    if name == "apply_recipe":
        from crdiff_search.apply import apply_recipe

        return apply_recipe
    raise AttributeError(f"module 'crdiff_search' has no attribute {name!r}")
