"""Extraction of form instances to files: runs, slices, parts, formats, watermarks and lineage."""
