"""postprocess (see the modules inside)."""
