"""Downloads against a real local HTTP server (Range support, cut connections) and safe extraction."""

from __future__ import annotations

import hashlib
import io
import re
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml
from loopback_http import serve

from repshift.data.download import (
    ArchiveError,
    DownloadError,
    UnsafeArchiveError,
    archive_spec,
    download,
    extract_archive,
    fetch_archive,
)

ROOT = Path(__file__).resolve().parents[3]

FAST = {"backoff": 0.0, "timeout": 5.0, "chunk_size": 1024}


@pytest.fixture
def server():
    with serve() as (base, state):
        yield base, state


def _payload(n: int = 200_000) -> bytes:
    # incompressible-looking but deterministic bytes
    out, block = bytearray(), b"repshift"
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ----------------------------------------------------------------------------------------------- download


def test_normal_download_verifies_and_skips_when_present(server, tmp_path):
    base, state = server
    data = _payload()
    state.files["/a.bin"] = data
    dest = tmp_path / "sub" / "a.bin"
    sha = hashlib.sha256(data).hexdigest()
    out = download(f"{base}/a.bin", dest, size=len(data), md5=_md5(data), sha256=sha, **FAST)
    assert out == dest and dest.read_bytes() == data
    assert not dest.with_name("a.bin.part").exists()
    assert state.requests == [("/a.bin", None)]
    download(f"{base}/a.bin", dest, md5=_md5(data), **FAST)  # present and verified: no request
    assert len(state.requests) == 1
    dest.write_bytes(b"stale")  # present but wrong: downloaded again
    download(f"{base}/a.bin", dest, md5=_md5(data), **FAST)
    assert dest.read_bytes() == data and len(state.requests) == 2


def test_cut_connection_resumes_with_range(server, tmp_path):
    base, state = server
    data = _payload()
    state.files["/cut.zip"] = data
    state.cut_first.add("/cut.zip")
    dest = tmp_path / "cut.zip"
    download(f"{base}/cut.zip", dest, size=len(data), md5=_md5(data), **FAST)
    assert dest.read_bytes() == data
    assert [path for path, _ in state.requests] == ["/cut.zip", "/cut.zip"]
    assert state.requests[0][1] is None
    # resumed from the bytes on disk: at most the half that was sent (a partial last chunk may be lost)
    start = int(re.fullmatch(r"bytes=(\d+)-", state.requests[1][1]).group(1))
    assert len(data) // 2 - 1024 <= start <= len(data) // 2


def test_server_ignoring_range_restarts_from_zero(server, tmp_path, caplog):
    base, state = server
    data = _payload()
    state.files["/norange.bin"] = data
    state.cut_first.add("/norange.bin")
    state.ignore_range.add("/norange.bin")
    dest = tmp_path / "norange.bin"
    download(f"{base}/norange.bin", dest, md5=_md5(data), **FAST)
    assert dest.read_bytes() == data
    assert state.requests[0][1] is None and state.requests[1][1].startswith("bytes=")  # answered with 200
    assert "ignored the Range request" in caplog.text
    assert len(state.requests) == 2


def test_leftover_part_file_is_resumed(server, tmp_path):
    base, state = server
    data = _payload()
    state.files["/p.bin"] = data
    dest = tmp_path / "p.bin"
    dest.with_name("p.bin.part").write_bytes(data[:12345])
    download(f"{base}/p.bin", dest, size=len(data), md5=_md5(data), **FAST)
    assert dest.read_bytes() == data
    assert state.requests == [("/p.bin", "bytes=12345-")]
    # a .part that is already complete: the server answers 416, the file is verified and kept
    dest.unlink()
    dest.with_name("p.bin.part").write_bytes(data)
    download(f"{base}/p.bin", dest, size=len(data), md5=_md5(data), **FAST)
    assert dest.read_bytes() == data and state.requests[-1] == ("/p.bin", f"bytes={len(data)}-")


def test_checksum_mismatch_is_a_clear_error_and_leaves_nothing(server, tmp_path):
    base, state = server
    archive = _zip_bytes({"val2017/1.txt": b"one"})
    state.files["/val2017.zip"] = archive
    dest, out_dir = tmp_path / "val2017.zip", tmp_path / "coco"
    url = f"{base}/val2017.zip"
    wrong = "0" * 32
    with pytest.raises(DownloadError) as err:
        download(url, dest, md5=wrong, **FAST)
        extract_archive(dest, out_dir)
    msg = str(err.value)
    assert url in msg and wrong in msg and _md5(archive) in msg and "md5 mismatch" in msg
    assert not dest.exists() and not dest.with_name("val2017.zip.part").exists()
    assert not out_dir.exists()
    assert _listing(tmp_path) == []


def test_size_mismatch_fails_before_downloading(server, tmp_path):
    base, state = server
    state.files["/s.bin"] = _payload(5000)
    with pytest.raises(DownloadError, match=r"expected 4000 bytes, server reports 5000"):
        download(f"{base}/s.bin", tmp_path / "s.bin", size=4000, **FAST)
    assert _listing(tmp_path) == []


def test_errors_stop_by_themselves(server, tmp_path):
    base, state = server
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{base}/missing.zip", tmp_path / "m.zip", retries=3, **FAST)
    assert state.count["/missing.zip"] == 1  # a 404 is not retried
    state.status["/busy.zip"] = 503
    with pytest.raises(DownloadError, match="giving up after 2 retries"):
        download(f"{base}/busy.zip", tmp_path / "b.zip", retries=2, **FAST)
    assert state.count["/busy.zip"] == 3
    dead = f"http://127.0.0.1:{_free_port()}/x"
    with pytest.raises(DownloadError, match="giving up after 1 retries"):
        download(dead, tmp_path / "x", retries=1, **FAST)
    assert _listing(tmp_path) == []


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_config_pins_the_official_archives():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    archives = cfg["coco"]["archives"]
    assert set(archives) == {"val2017", "train2017", "annotations_trainval2017"}
    for name, spec in archives.items():
        assert spec["url"].startswith("http://images.cocodataset.org/") and spec["url"].endswith(
            f"{name}.zip"
        )
    cifar = cfg["cifar100"]["archive"]
    assert cifar["url"] == "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    assert cifar["md5"] == "eb9058c3a382ffc7106e4002c42a8d85"  # as published on the CIFAR page
    for spec in [*archives.values(), cifar]:
        assert archive_spec(spec, "x") == spec
        assert spec["size"] > 100_000_000
        assert re.fullmatch(r"[0-9a-f]{32}", spec["md5"]) and re.fullmatch(r"[0-9a-f]{64}", spec["sha256"])


def test_archive_spec_needs_a_url_and_a_checksum():
    with pytest.raises(ValueError, match="coco.archives.val2017: give the archive's md5 or sha256"):
        archive_spec({"url": "http://x/a.zip", "size": 3}, "coco.archives.val2017")
    with pytest.raises(ValueError, match="needs a `url`"):
        archive_spec({"md5": "0" * 32}, "x")
    with pytest.raises(ValueError, match="unknown key"):
        archive_spec({"url": "http://x/a.zip", "md5": "0" * 32, "sha1": "0"}, "x")


def test_fetch_archive_names_the_file_after_the_url(server, tmp_path):
    base, state = server
    data = _payload(5000)
    state.files["/zips/val2017.zip"] = data
    spec = {"url": f"{base}/zips/val2017.zip", "size": len(data), "md5": _md5(data)}
    dest = fetch_archive(spec, tmp_path / "archives")
    assert dest == tmp_path / "archives" / "val2017.zip" and dest.read_bytes() == data


# --------------------------------------------------------------------------------------------- extraction


def test_zip_extraction_keeps_other_content_and_filters_by_prefix(tmp_path):
    images = tmp_path / "val2017.zip"
    images.write_bytes(_zip_bytes({"val2017/000000000139.jpg": b"jpg1", "val2017/000000000285.jpg": b"jpg2"}))
    ann = tmp_path / "ann.zip"
    ann.write_bytes(
        _zip_bytes({"annotations/instances_val2017.json": b"{}", "annotations/captions_val2017.json": b"[]"})
    )
    out = tmp_path / "coco"
    assert extract_archive(images, out) == out
    extract_archive(ann, out, members_prefix="annotations/instances_")
    assert _listing(out) == [
        "annotations",
        "annotations/instances_val2017.json",
        "val2017",
        "val2017/000000000139.jpg",
        "val2017/000000000285.jpg",
    ]
    assert (out / "val2017" / "000000000285.jpg").read_bytes() == b"jpg2"
    extract_archive(images, out)  # extracting again replaces the folder cleanly
    assert len(_listing(out)) == 5
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    with pytest.raises(ArchiveError, match="no entry starts with"):
        extract_archive(ann, out, members_prefix="nope/")


@pytest.mark.parametrize(
    "bad", ["../evil.txt", "/abs.txt", "ok/../../evil.txt", "C:/evil.txt", "..\\evil.txt"]
)
def test_escaping_zip_entries_are_refused(tmp_path, bad):
    archive = tmp_path / "bad.zip"
    archive.write_bytes(_zip_bytes({"good/a.txt": b"a", bad: b"evil"}))
    assert bad in zipfile.ZipFile(archive).namelist()  # the archive really carries the bad name
    out = tmp_path / "x" / "out"
    with pytest.raises(UnsafeArchiveError) as err:
        extract_archive(archive, out)
    assert repr(bad) in str(err.value)
    assert _listing(tmp_path) == ["bad.zip"]  # nothing inside the target, nothing outside


@pytest.mark.parametrize("target", ["../../outside", "a.txt"])
def test_zip_symlinks_are_refused(tmp_path, target):
    # zipfile would write a symlink entry as a plain file holding its target: refused, inside or not
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("pkg/a.txt", b"a")
        info = zipfile.ZipInfo("pkg/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, target)
    archive = tmp_path / "link.zip"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(UnsafeArchiveError, match=r"'pkg/link'.*symlink"):
        extract_archive(archive, tmp_path / "out")
    assert _listing(tmp_path) == ["link.zip"]


def _tar_gz(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return path


def test_tar_gz_extraction_like_cifar(tmp_path):
    files = {
        "cifar-100-python/train": b"T" * 3000,
        "cifar-100-python/test": b"t",
        "cifar-100-python/meta": b"m",
    }
    links = {"cifar-100-python/latest": "train", "cifar-100-python/up": ".."}  # links that stay inside
    archive = _tar_gz(tmp_path / "cifar-100-python.tar.gz", files, links=links)
    out = extract_archive(archive, tmp_path / "data")
    for name, data in files.items():
        assert (out / name).read_bytes() == data
    link = out / "cifar-100-python" / "latest"
    assert link.is_symlink() and link.read_bytes() == files["cifar-100-python/train"]
    assert (out / "cifar-100-python" / "up").resolve() == out.resolve()


@pytest.mark.parametrize(
    ("files", "links", "bad"),
    [
        ({"../evil.txt": b"x"}, None, "../evil.txt"),
        ({"/abs.txt": b"x"}, None, "/abs.txt"),
        ({"d/a": b"a"}, {"d/up": "../../etc/passwd"}, "d/up"),
        ({"d/a": b"a"}, {"d/abs": "/etc/passwd"}, "d/abs"),
        ({"d/a": b"a"}, {"d/l": "..", "d/l2": "l/../x"}, "d/l2"),  # inside on paper, outside through d/l
    ],
)
def test_escaping_tar_entries_are_refused(tmp_path, files, links, bad):
    archive = _tar_gz(tmp_path / "bad.tar.gz", files, links)
    with pytest.raises(UnsafeArchiveError) as err:
        extract_archive(archive, tmp_path / "out")
    assert repr(bad) in str(err.value)
    assert _listing(tmp_path) == ["bad.tar.gz"]


def test_tar_special_files_are_refused(tmp_path):
    archive = tmp_path / "fifo.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("d/a")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"a"))
        fifo = tarfile.TarInfo("d/pipe")
        fifo.type = tarfile.FIFOTYPE
        tf.addfile(fifo)
    with pytest.raises(UnsafeArchiveError, match=r"'d/pipe' is a special file"):
        extract_archive(archive, tmp_path / "out")
    assert _listing(tmp_path) == ["fifo.tar.gz"]


def test_corrupt_member_leaves_no_partial_folder(tmp_path):
    data = _payload(50_000)
    raw = bytearray(_zip_bytes({"val2017/a.bin": b"fine", "val2017/b.bin": data}))
    i = raw.find(b"val2017/b.bin") + len("val2017/b.bin") + 200  # inside b.bin's compressed data
    raw[i] ^= 0xFF
    archive = tmp_path / "corrupt.zip"
    archive.write_bytes(bytes(raw))
    out = tmp_path / "out"
    with pytest.raises(ArchiveError, match=r"corrupt.zip is damaged .*val2017/b.bin"):
        extract_archive(archive, out)
    assert not (out / "val2017").exists()
    assert _listing(out) == []


def test_not_an_archive_is_refused(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"<html>not found</html>")
    with pytest.raises(ArchiveError, match="not a zip or tar"):
        extract_archive(junk, tmp_path / "out")


def test_truncated_tar_gz_is_reported_as_damaged(tmp_path):
    good = _tar_gz(tmp_path / "full.tar.gz", {"cifar-100-python/train": _payload(30_000)})
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(good.read_bytes()[:-5000])
    with pytest.raises(ArchiveError, match="cut.tar.gz is damaged"):
        extract_archive(cut, tmp_path / "out")
    assert not (tmp_path / "out").exists() or _listing(tmp_path / "out") == []


def test_tar_hard_links_inside_are_copied_and_outside_refused(tmp_path):
    def build(path: Path, linkname: str) -> Path:
        with tarfile.open(path, "w:gz") as tf:
            info = tarfile.TarInfo("d/a")
            info.size = 3
            tf.addfile(info, io.BytesIO(b"abc"))
            link = tarfile.TarInfo("d/b")
            link.type = tarfile.LNKTYPE
            link.linkname = linkname
            tf.addfile(link)
        return path

    out = extract_archive(build(tmp_path / "ok.tar.gz", "d/a"), tmp_path / "ok")
    assert (out / "d" / "b").read_bytes() == b"abc"
    with pytest.raises(UnsafeArchiveError, match="'d/b'"):
        extract_archive(build(tmp_path / "bad.tar.gz", "../etc/passwd"), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
