"""Where a conversion writes: the target store itself, or a staging store beside it when the
conversion replaces one, swapped in only once every check passed."""

from __future__ import annotations

import os
import shutil
import uuid
from typing import Any

from ..store import filesystem, is_local, open_group, store_location
from ..write import prepare_target

__all__ = ["StagedOutput"]


class StagedOutput:
    """Where the dataset is written: the target itself, or a staging store beside it when it
    replaces one (swapped in by :meth:`commit`), removed by :meth:`discard`."""

    def __init__(self, url: str, storage_options: dict | None, overwrite: bool) -> None:
        self.url, self.storage_options = url, storage_options
        self.mode = prepare_target(url, storage_options, overwrite)
        self.fs, self.path = filesystem(url, storage_options)
        self.replaces = self.mode == "w" and self.fs.exists(f"{self.path}/zarr.json")
        self.write_url = url
        if self.replaces:
            head, _, name = url.rstrip("/").rpartition("/")
            local = store_location(url) if is_local(url) else None
            staging = f".{name or url}.converting-{uuid.uuid4().hex[:12]}"
            if local is not None:
                self.write_url = os.path.join(os.path.dirname(local), staging)
            else:
                self.write_url = f"{head}/{staging}"
        self.created = False

    def group(self) -> Any:
        mode = "w" if self.replaces else self.mode
        group = open_group(self.write_url, mode, self.storage_options)
        self.created = True
        return group

    def commit(self) -> None:
        if not self.replaces:
            return
        _, staging = filesystem(self.write_url, self.storage_options)
        if is_local(self.url):
            target = store_location(self.url)
            aside = f"{staging}.replaced"
            os.rename(target, aside)
            os.rename(staging, target)
            shutil.rmtree(aside)
        else:
            self.fs.rm(self.path, recursive=True)
            self.fs.mv(staging, self.path, recursive=True)

    def discard(self) -> None:
        """Remove what this conversion wrote (an empty directory it was given stays)."""
        if not self.created:
            return
        fs, path = filesystem(self.write_url, self.storage_options)
        if fs.exists(path):
            fs.rm(path, recursive=True)
        if self.mode == "w" and not self.replaces:
            fs.mkdir(path)
