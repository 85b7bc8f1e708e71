"""Bootstrappers, one module per OS family."""
