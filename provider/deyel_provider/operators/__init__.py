"""Operators: any call, a shared token, extraction to files, write-back."""
