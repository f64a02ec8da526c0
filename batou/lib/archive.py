"""batou.lib.archive: unpacking tar and zip archives (see executor.lib.archive)."""

from executor.lib.archive import Extract, Extractor, Untar, Unzip

__all__ = ["Extract", "Extractor", "Untar", "Unzip"]
