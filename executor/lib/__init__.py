"""consign\x27s component library."""
