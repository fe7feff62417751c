"""Hooks: DeyelHook, the one way to call a Deyel server."""
