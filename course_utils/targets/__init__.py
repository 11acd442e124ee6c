"""targets (see the modules inside)."""
