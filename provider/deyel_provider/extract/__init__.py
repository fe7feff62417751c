"""Extraction of form instances to files: the run, parts, formats, watermarks and lineage."""
