"""batou.lib.file: files, directories, links (see executor.lib.file)."""

from executor.lib.file import (
    BinaryFile,
    Content,
    Directory,
    File,
    Group,
    JSONContent,
    Mode,
    Owner,
    Presence,
    Purge,
    Symlink,
    SyncDirectory,
    YAMLContent,
)

__all__ = [
    "BinaryFile",
    "Content",
    "Directory",
    "File",
    "Group",
    "JSONContent",
    "Mode",
    "Owner",
    "Presence",
    "Purge",
    "Symlink",
    "SyncDirectory",
    "YAMLContent",
]
