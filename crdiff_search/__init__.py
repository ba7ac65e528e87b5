"""crdiff-search."""
