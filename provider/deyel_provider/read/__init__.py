"""Reading a form exactly once while it changes: time slices of an incremental field over the page walker."""
