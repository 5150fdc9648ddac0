"""Text catalogs of the bots, one module per language (``TEXTS``: key → template)."""
