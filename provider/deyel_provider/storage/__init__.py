"""Output storage: paths, atomic publish without following links, and compression."""
