"""Injection policies: the schema, where they come from, and the store that swaps them atomically."""
