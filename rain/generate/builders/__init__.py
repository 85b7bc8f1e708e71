"""Builders: where a build runs."""
