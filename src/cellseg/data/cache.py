"""A disk cache of decoded samples, so a large annotated set is decoded once, not on every run.

Decoding is what makes a DSB2018-layout set slow to open: the 664 stage-1 training images come with
28,986 per-nucleus mask PNGs. Each sample read from files is stored once as a compressed ``.npz``
(image as decoded, merged label map) under the cache folder, with a fingerprint of its source files
(names, sizes, modification times). A later read whose fingerprint matches loads the ``.npz``; a changed,
added or removed file changes the fingerprint and the sample is decoded again. A cache that cannot be
written (read-only or full disk) is reported once and training goes on from the files.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from cellseg.core import files
from cellseg.data.sample import Sample, SampleRef, image_id

#: Bump when the stored arrays change meaning, so old entries are decoded again.
FORMAT = 1


def default_cache_dir() -> Path:
    """``$CELLSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/cellseg``, else ``~/.cache/cellseg``."""
    if env := os.environ.get("CELLSEG_CACHE_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cellseg"


def fingerprint(sources: tuple[Path, ...]) -> str:
    """A digest of the names, sizes and modification times of the files (and folders' files) given."""
    digest = hashlib.sha256(f"cellseg-cache-{FORMAT}".encode())
    for source in sources:
        entries = sorted(source.iterdir()) if source.is_dir() else [source]
        for entry in entries:
            try:
                stat = entry.stat()
                digest.update(f"{entry}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            except FileNotFoundError:
                digest.update(f"{entry}\0missing\n".encode())
    return digest.hexdigest()


class SampleCache:
    """Where decoded samples are kept; :meth:`wrap` makes references read through it."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder).expanduser() if folder is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0
        self._write_failed = False

    def entry(self, ref: SampleRef) -> Path:
        """Keyed by the first source file and the sample's id within its source (one image may give
        several samples: its regions of interest), so the same image shares an entry across data sets."""
        where = f"{ref.sources[0].resolve()}\n{image_id(ref.id)}"
        key = hashlib.sha256(where.encode()).hexdigest()[:32]
        return self.folder / key[:2] / f"{key}.npz"

    def wrap(self, refs: list[SampleRef]) -> list[SampleRef]:
        """The references with ``load`` / ``load_image`` going through the cache (uncacheable ones kept)."""
        return [
            replace(r, load=self._loader(r), load_image=self._image_loader(r)) if r.sources else r
            for r in refs
        ]

    def _read(self, ref: SampleRef, keys: tuple[str, ...], current: str) -> dict[str, np.ndarray] | None:
        """The stored arrays if the entry exists, is whole, and has the ``current`` fingerprint."""
        path = self.entry(ref)
        if not path.is_file():
            return None
        try:
            with np.load(path) as stored:
                if str(stored["fingerprint"]) != current:
                    return None
                return {k: stored[k] for k in keys}
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
            return None  # damaged entry: decode again and overwrite it

    def _write(self, ref: SampleRef, sample: Sample, current: str) -> None:
        labels = sample.labels
        if labels.max(initial=0) < 2**16:
            labels = labels.astype(np.uint16)  # a quarter of the bytes; int32 comes back on load
        try:
            with files.atomic_path(self.entry(ref)) as tmp:
                np.savez_compressed(tmp, fingerprint=np.array(current), image=sample.image, labels=labels)
        except OSError as exc:
            if not self._write_failed:
                self._write_failed = True
                warnings.warn(
                    f"cannot write the sample cache in {self.folder} ({exc}); reading from the files "
                    "instead (set data.cache_dir to a writable folder, or data.cache: false)",
                    stacklevel=2,
                )

    def _loader(self, ref: SampleRef):
        def load() -> Sample:
            # taken before decoding, so a file that changes meanwhile is not hidden behind a fresh entry
            current = fingerprint(ref.sources)
            stored = self._read(ref, ("image", "labels"), current)
            if stored is not None:
                self.hits += 1
                return Sample(ref.id, stored["image"], stored["labels"].astype(np.int32))
            self.misses += 1
            sample = ref.load()  # raises DataError naming the file; nothing is cached for it
            self._write(ref, sample, current)
            return sample

        return load

    def _image_loader(self, ref: SampleRef):
        def load_image() -> np.ndarray:
            stored = self._read(ref, ("image",), fingerprint(ref.sources))
            return stored["image"] if stored is not None else ref.load_image()

        return load_image
