"""A real full disk for tests: a size-limited tmpfs mounted on a directory, and a filler file.

    with SmallDisk(tmp_path / "data", "8M") as disk:
        ...                       # the gateway's data_dir lives on it
        disk.fill()               # every free block taken: writes fail with ENOSPC
        disk.free()               # the filler is gone: space is back

Needs root (``mount -t tmpfs``); ``SmallDisk.available()`` says whether this machine allows it,
so tests can skip elsewhere. ``__exit__`` unmounts (lazily, so a process still holding a file
there cannot keep the mount busy).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

FILLER = "filler"


class SmallDisk:
    def __init__(self, path: Path, size: str = "8M"):
        self.path, self.size = Path(path), size
        self.mounted = False

    @staticmethod
    def available() -> bool:
        return os.geteuid() == 0

    def __enter__(self) -> "SmallDisk":
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", str(self.path)],
                       check=True, capture_output=True)
        self.mounted = True
        return self

    def __exit__(self, *exc) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)
            self.mounted = False

    def fill(self) -> int:
        """Write a filler file until the disk is full (ENOSPC); return its size in bytes."""
        written = 0
        fd = os.open(self.path / FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            block = b"\0" * 4096
            while True:
                try:
                    n = os.write(fd, block)
                except OSError:
                    break
                written += n
                if n < len(block):
                    block = block[:max(1, len(block) - n)]
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        """Delete the filler file: the space is back."""
        (self.path / FILLER).unlink(missing_ok=True)
