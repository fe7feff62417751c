"""Deyel's API: resource shapes, instance ids, paging and the one page walker, the server clock and date
literals."""
