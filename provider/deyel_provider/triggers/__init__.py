"""Triggers that wait on Deyel in the triggerer."""
