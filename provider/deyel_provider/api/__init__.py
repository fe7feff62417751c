"""Deyel's API: instance paths and ids, paging and the one page walker, date literals, the server clock."""
