"""Sensors that wait on Deyel."""
