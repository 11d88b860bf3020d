"""Fetch, verify and unpack the DSB2018 / BBBC038 training set (needs internet access).

Verification: the optional SHA-256 of the archive, the zip's own CRC check, a refusal to unpack any
member outside the target folder, and a scan that every unpacked image has its masks.
"""

from __future__ import annotations

import hashlib
import shutil
import stat
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from cellseg.data.readers import scan_samples
from cellseg.data.sample import DataError

#: The Broad Bioimage Benchmark Collection's copy of the 2018 Data Science Bowl stage-1 training set.
DSB2018_TRAIN_URL = "https://data.broadinstitute.org/bbbc/BBBC038/stage1_train.zip"


def fetch(url: str, target: Path, timeout: float = 60.0, progress: bool = True) -> str:
    """Stream ``url`` to ``target`` (via a .part file) and return the SHA-256 of what was written."""
    digest = hashlib.sha256()
    part = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, part.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name, disable=not progress) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        part.unlink(missing_ok=True)
        raise DataError(f"download of {url} failed: {exc}") from exc
    part.replace(target)
    return digest.hexdigest()


def unpack(archive: Path, dest: Path) -> Path:
    """Unpack a DSB-layout zip into ``dest`` (refusing unsafe paths) and return the data root."""
    try:
        with zipfile.ZipFile(archive) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise DataError(f"{archive}: member {bad} fails its CRC check (corrupt download?)")
            root = dest.resolve()
            for info in zf.infolist():
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise DataError(
                        f"{archive}: member {info.filename!r} is a symbolic link; refusing to unpack an "
                        "archive with links (they can redirect other members outside the target)"
                    )
                if not (root / info.filename).resolve().is_relative_to(root):
                    raise DataError(f"{archive}: member {info.filename!r} would unpack outside {dest}")
            zf.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{archive}: not a valid zip archive ({exc})") from exc
    except OSError as exc:  # e.g. a file member where the archive later needs a folder
        raise DataError(f"{archive}: cannot unpack into {dest} ({exc})") from exc
    children = [p for p in dest.iterdir() if p.is_dir()]
    if len(children) == 1 and not (children[0] / "images").is_dir():
        return children[0]  # the archive wrapped everything in one folder
    return dest


def download_dsb2018(
    out: Path, url: str = DSB2018_TRAIN_URL, sha256: str | None = None, progress: bool = True
) -> tuple[Path, int]:
    """Download, verify and unpack into ``out/<archive name>``; return the data root and its image count."""
    name = Path(url.rstrip("/").rsplit("/", 1)[-1]).stem or "dsb2018"
    dest = out / name
    if dest.exists():
        raise DataError(f"{dest} exists already; remove it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"{name}.zip"
    got = fetch(url, archive, progress=progress)
    if sha256 is not None and got != sha256.lower():
        archive.unlink()
        raise DataError(f"{url}: SHA-256 is {got}, expected {sha256}; the download is corrupt or changed")
    dest.mkdir()
    try:
        root = unpack(archive, dest)
        refs = scan_samples(str(root), "dsb2018")
        for ref in refs:  # every image decodes and has masks of its size
            ref.load()
    except BaseException:  # nothing half-unpacked or refused stays behind, whatever went wrong
        shutil.rmtree(dest, ignore_errors=True)
        archive.unlink(missing_ok=True)
        raise
    archive.unlink()
    return root, len(refs)
