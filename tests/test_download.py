"""scripts/download_data.py against archives served by a local HTTP server on 127.0.0.1."""

import functools
import hashlib
import http.server
import threading
import zipfile

import numpy as np
import pytest
from skimage import io as skio

from cellseg.cli.download import main
from cellseg.data import DataError
from cellseg.data.download import download_dsb2018


@pytest.fixture
def served(tmp_path):
    """(folder served, base URL) of a local HTTP server that stops after the test."""
    folder = tmp_path / "www"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def dsb_zip(path, count=3):
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(count):
            image, mask = path.parent / "i.png", path.parent / "m.png"
            skio.imsave(image, np.full((20, 30, 3), 40 * i, np.uint8), check_contrast=False)
            m = np.zeros((20, 30), np.uint8)
            m[5:10, 5:12] = 255
            skio.imsave(mask, m, check_contrast=False)
            zf.write(image, f"id{i}/images/id{i}.png")
            zf.write(mask, f"id{i}/masks/n0.png")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_downloads_verifies_and_unpacks(served, tmp_path):
    folder, url = served
    sha = dsb_zip(folder / "stage1_train.zip")
    root, count = download_dsb2018(tmp_path / "data", f"{url}/stage1_train.zip", sha256=sha, progress=False)
    assert count == 3 and root == tmp_path / "data" / "stage1_train"
    assert (root / "id1" / "masks" / "n0.png").is_file()
    assert not (tmp_path / "data" / "stage1_train.zip").exists(), "the archive is removed once unpacked"
    with pytest.raises(DataError, match=r"exists already"):
        download_dsb2018(tmp_path / "data", f"{url}/stage1_train.zip", progress=False)


def test_checksum_mismatch_is_rejected(served, tmp_path):
    folder, url = served
    dsb_zip(folder / "a.zip")
    with pytest.raises(DataError, match=r"SHA-256 is .* expected 00ff"):
        download_dsb2018(tmp_path / "data", f"{url}/a.zip", sha256="00ff", progress=False)
    assert not (tmp_path / "data" / "a").exists()


def test_corrupt_or_missing_archives_fail_clearly(served, tmp_path):
    folder, url = served
    (folder / "bad.zip").write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DataError, match=r"not a valid zip archive"):
        download_dsb2018(tmp_path / "data", f"{url}/bad.zip", progress=False)
    assert not (tmp_path / "data" / "bad").exists(), "a failed unpack leaves nothing behind"
    with pytest.raises(
        DataError, match=r"download of http://127\.0\.0\.1:\d+/none\.zip failed: HTTP Error 404"
    ):
        download_dsb2018(tmp_path / "data", f"{url}/none.zip", progress=False)


def test_members_outside_the_target_are_refused(served, tmp_path):
    folder, url = served
    with zipfile.ZipFile(folder / "evil.zip", "w") as zf:
        zf.writestr("../../escaped.txt", "x")
    with pytest.raises(DataError, match="would unpack outside"):
        download_dsb2018(tmp_path / "data", f"{url}/evil.zip", progress=False)
    assert not (tmp_path / "escaped.txt").exists()


def test_cli(served, tmp_path, capsys):
    folder, url = served
    dsb_zip(folder / "set.zip", count=2)
    assert main(["--out", str(tmp_path / "d"), "--url", f"{url}/set.zip", "--quiet"]) == 0
    assert "2 annotated images verified" in capsys.readouterr().out
    assert main(["--out", str(tmp_path / "d"), "--url", f"{url}/missing.zip", "--quiet"]) == 2
    assert "failed" in capsys.readouterr().err
