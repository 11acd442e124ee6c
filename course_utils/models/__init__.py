"""models (see the modules inside)."""
