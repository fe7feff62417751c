"""Output storage: atomic publish without following links, and compression."""
