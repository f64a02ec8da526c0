"""batou.lib: the component library (see executor.lib)."""
