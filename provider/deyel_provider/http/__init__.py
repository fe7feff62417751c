"""HTTP to a Deyel server: retry, per-call deadlines, capped bodies, typed errors, redaction, concurrency."""
