"""Resumable, verified downloads and safe archive extraction (COCO 2017, CIFAR-100).

The URLs, sizes and checksums of the archives live in the config (``coco.archives``, ``cifar100.archive``;
:func:`archive_spec` checks one entry), not here: one place of truth, visible and editable by users.

``download`` streams to ``<dest>.part``, resumes a cut connection with an HTTP Range request, verifies size and
checksums, and only then renames the file onto ``dest``: a file at ``dest`` is always complete and verified.
``extract_archive`` unpacks through ``tarfile``'s ``"data"`` filter and ``zipfile``'s path handling, refuses
entries that would land outside the target folder and makes every extracted top-level entry appear only once
all are complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import stat
import sys
import tarfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import requests
from tqdm import tqdm

from repshift.formats.atomic import scratch_dir

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 60.0
_RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


def archive_spec(spec: Any, where: str) -> dict[str, Any]:
    """Check one archive entry of the config (``url`` plus ``size`` / ``md5`` / ``sha256``) and return it.

    At least one checksum is required: a download is only ever renamed into place once verified.
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("url"), str) or not spec["url"]:
        raise ValueError(f"{where}: an archive needs a `url`, got {spec!r}")
    unknown = set(spec) - {"url", "size", "md5", "sha256"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)} (known: url, size, md5, sha256)")
    if not (spec.get("md5") or spec.get("sha256")):
        raise ValueError(f"{where}: give the archive's md5 or sha256, so that the download can be verified")
    return {"url": spec["url"], **{k: spec.get(k) for k in ("size", "md5", "sha256")}}


def fetch_archive(spec: Any, dest_dir: str | os.PathLike, *, where: str = "archive") -> Path:
    """Download (resumable, verified) the archive described by a config entry into ``dest_dir``."""
    spec = archive_spec(spec, where)
    url = spec["url"]
    name = Path(urlsplit(url).path).name
    if not name:
        raise ValueError(f"{where}: cannot tell a file name from the url {url!r}")
    return download(url, Path(dest_dir) / name, size=spec["size"], md5=spec["md5"], sha256=spec["sha256"])


class DownloadError(RuntimeError):
    """A download failed for good: bad status, retries exhausted, or size/checksum mismatch."""


class ArchiveError(ValueError):
    """An archive cannot be extracted: it is not an archive, it is damaged, or it is unsafe."""


class UnsafeArchiveError(ArchiveError):
    """An archive entry would be written outside the target folder (or is not a plain file/folder/link)."""


def _progress_stream() -> IO[str]:
    """The stream of the first stream handler above this logger (a rule's log file), else stderr."""
    logger: logging.Logger | None = log
    while logger is not None:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and hasattr(handler.stream, "write"):
                return handler.stream
        logger = logger.parent if logger.propagate else None
    return sys.stderr


def _mismatch(path: Path, size: int | None, md5: str | None, sha256: str | None) -> str | None:
    """None when ``path`` matches every expectation given, else a description of the first mismatch."""
    got_size = path.stat().st_size
    if size is not None and got_size != size:
        return f"size mismatch: expected {size} bytes, got {got_size}"
    expected = {name: value.lower() for name, value in (("md5", md5), ("sha256", sha256)) if value}
    for name, want in expected.items():
        with path.open("rb") as f:
            got = hashlib.file_digest(f, name).hexdigest()
        if got != want:
            return f"{name} mismatch: expected {want}, got {got}"
    return None


@dataclass
class _Attempt:
    """What one HTTP request achieved."""

    total: int | None  # full size of the file as the server reported it, if it did
    complete: bool


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _fetch_once(
    session: requests.Session,
    url: str,
    part: Path,
    *,
    size: int | None,
    timeout: float,
    chunk_size: int,
) -> _Attempt:
    """One GET from the bytes already in ``part``; appends to it. Network errors propagate."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with session.get(url, headers=headers, stream=True, timeout=timeout, allow_redirects=True) as resp:
        if resp.status_code == 416 and offset:
            # Range not satisfiable: the part file is already complete, or longer than the file.
            m = re.search(r"/(\d+)", resp.headers.get("Content-Range", ""))
            total = int(m.group(1)) if m else size
            if total is not None and total == offset:
                return _Attempt(total=total, complete=True)
            log.warning("%s: server refused resuming at byte %d (416); starting over", url, offset)
            part.unlink()
            return _Attempt(total=total, complete=False)
        if resp.status_code in _RETRYABLE_STATUS:
            raise requests.HTTPError(f"HTTP {resp.status_code} from {url}", response=resp)
        if resp.status_code not in (200, 206):
            raise DownloadError(
                f"{url}: HTTP {resp.status_code} {resp.reason}; check the URL (no retry for this status)"
            )
        if resp.status_code == 206:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if m is None or int(m.group(1)) != offset:
                log.warning("%s: server answered 206 from an unexpected position; starting over", url)
                part.unlink(missing_ok=True)
                return _Attempt(total=None, complete=False)
            total = int(m.group(3)) if m.group(3) != "*" else None
            mode = "ab"
        else:
            if offset:
                log.warning("%s: server ignored the Range request (200); restarting from byte 0", url)
            offset = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        if size is not None and total is not None and total != size:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url}: size mismatch: expected {size} bytes, server reports {total}")
        with (
            part.open(mode) as f,
            tqdm(
                total=total if total is not None else size,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=Path(url).name[:40],
                file=_progress_stream(),
                mininterval=1.0,
                leave=False,
            ) as bar,
        ):
            for chunk in resp.iter_content(chunk_size=chunk_size):
                f.write(chunk)
                bar.update(len(chunk))
        got = part.stat().st_size
        expected_total = total if total is not None else size
        return _Attempt(total=total, complete=expected_total is None or got >= expected_total)


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    size: int | None = None,
    md5: str | None = None,
    sha256: str | None = None,
    retries: int = 5,
    timeout: float = 60,
    chunk_size: int = 1 << 20,
    backoff: float = 1.0,
) -> Path:
    """Download ``url`` to ``dest``, resuming and retrying, and verify it before it appears at ``dest``.

    Bytes go to ``<dest>.part``; after a cut connection the next request asks for the rest with
    ``Range: bytes=N-`` (a server that answers 200 instead of 206 is followed by starting over). ``retries`` is
    the number of failed requests in a row tolerated; a request that brings the file further than ever before
    resets the count, so a long download over a flaky line still finishes, while a server that cuts at the same
    place every time makes it stop. Waits ``backoff * 2**k`` seconds (at most 60) between attempts.
    When ``size``/``md5``/``sha256`` are given they are checked before the rename; on a mismatch the
    ``.part`` file is deleted and ``DownloadError`` names the URL, the expected and the actual value.
    If ``dest`` already exists and matches, nothing is downloaded. A ``.part`` left by a network failure is
    kept, so that the next call resumes it.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    if dest.exists():
        problem = _mismatch(dest, size, md5, sha256)
        if problem is None:
            log.info("%s already present and verified; not downloading", dest)
            return dest
        log.warning("%s exists but does not match (%s); downloading it again", dest, problem)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if part.exists():
        log.info("resuming %s from byte %d", url, part.stat().st_size)

    failures = 0
    best = part.stat().st_size if part.exists() else 0
    with requests.Session() as session:
        while True:
            try:
                attempt = _fetch_once(session, url, part, size=size, timeout=timeout, chunk_size=chunk_size)
                error: BaseException | None = None
            except requests.RequestException as exc:  # cut connection, timeout, 5xx, ...
                attempt, error = None, exc
            have = part.stat().st_size if part.exists() else 0
            if attempt is not None and attempt.complete:
                break
            if have > best:
                best, failures = have, 0
            else:
                failures += 1
            reason = error if error is not None else f"connection closed at byte {have}"
            if failures > retries:
                raise DownloadError(
                    f"{url}: giving up after {retries} retries without progress ({reason}); "
                    f"{have} bytes kept in {part}, run again to resume"
                )
            wait = min(backoff * 2 ** max(failures - 1, 0), _MAX_BACKOFF_S)
            log.warning("%s: %s; retrying from byte %d in %.1fs", url, reason, have, wait)
            time.sleep(wait)

    problem = _mismatch(part, size, md5, sha256)
    if problem is not None:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{url}: {problem}; deleted {part}. The server sent a different file or the bytes were corrupted: "
            "check the URL and the expected checksum, then run again"
        )
    os.replace(part, dest)
    log.info(
        "downloaded %s to %s (%d bytes, verified: %s)",
        url,
        dest,
        dest.stat().st_size,
        _verified(size, md5, sha256),
    )
    return dest


def _verified(size: int | None, md5: str | None, sha256: str | None) -> str:
    checks = [name for name, value in (("size", size), ("md5", md5), ("sha256", sha256)) if value is not None]
    return ", ".join(checks) or "nothing (no expectation given)"


# --------------------------------------------------------------------------------------------- extraction


_DRIVE = re.compile(r"^[A-Za-z]:")


def _refusal(info: zipfile.ZipInfo | tarfile.TarInfo) -> str | None:
    """Why an entry is refused before the library sees it, or None.

    Kept by hand because the libraries do not refuse these: zipfile rewrites absolute, drive-lettered and '..'
    names into the folder, tarfile's data filter strips a leading '/', and zipfile writes a symlink as a plain
    file holding its target. An official archive carries none of them, so one is a sign of a wrong file.
    """
    name = info.filename if isinstance(info, zipfile.ZipInfo) else info.name
    if name[:1] in ("/", "\\") or _DRIVE.match(name) or ".." in re.split(r"[\\/]", name):
        return "it would be written outside the target folder (absolute path, '..' or drive letter)"
    if isinstance(info, zipfile.ZipInfo) and stat.S_ISLNK(info.external_attr >> 16):
        return "a symlink in a zip archive (zipfile would write it as a plain file)"
    return None


def _top(name: str) -> str | None:
    """The top-level folder (or file) an entry belongs to; None for the archive root itself."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return parts[0] if parts else None


@contextlib.contextmanager
def _open_archive(archive: Path) -> Iterator[tuple[list[Any], zipfile.ZipFile | tarfile.TarFile]]:
    """The archive's entries (ZipInfo or TarInfo) and its open handle."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            yield zf.infolist(), zf
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive, mode="r:*") as tf:
            yield tf.getmembers(), tf
    else:
        raise ArchiveError(f"{archive}: not a zip or tar archive (or it is damaged); download it again")


def extract_archive(
    archive: str | os.PathLike, dest_dir: str | os.PathLike, *, members_prefix: str | None = None
) -> Path:
    """Extract a zip or tar(.gz) archive into ``dest_dir`` and return ``dest_dir``.

    Safety comes from the standard library: tar archives go through ``tarfile``'s ``"data"`` extraction filter
    (links pointing outside, paths through links, devices and FIFOs are refused), zip archives through
    ``zipfile``'s own path handling; absolute and ``..`` names and zip symlinks are refused up front
    (:func:`_refusal`). A refused entry raises ``UnsafeArchiveError`` naming it, and nothing appears in
    ``dest_dir``: the archive is unpacked into a temporary sibling folder first, and each top-level entry
    (``val2017/``, ``annotations/``, ``cifar-100-python/``) is moved into place only when all are complete,
    replacing an older copy; other content of ``dest_dir`` is left alone, so several archives can share one
    folder. ``members_prefix`` restricts extraction to entries whose name starts with it (e.g.
    ``"annotations/instances_"``); paths are kept as in the archive. Archives reach this point only after their
    pinned checksum matched (:func:`download`), so the filter guards against a wrong file, not an attacker
    (Python before 3.11.13 has known bypasses of the filter, CVE-2025-4517).
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    try:
        tops = _extract(archive, dest_dir, members_prefix)
    except tarfile.FilterError as exc:
        raise UnsafeArchiveError(f"{archive}: refusing entry: {exc}; nothing was extracted") from exc
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError) as exc:
        raise ArchiveError(
            f"{archive} is damaged ({exc}); nothing was extracted: delete it and download again"
        ) from exc
    log.info("extracted %s into %s (%s)", archive, dest_dir, ", ".join(tops))
    return dest_dir


def _extract(archive: Path, dest_dir: Path, members_prefix: str | None) -> list[str]:
    with _open_archive(archive) as (members, handle):
        if members_prefix is not None:
            members = [m for m in members if _name(m).startswith(members_prefix)]
            if not members:
                raise ArchiveError(
                    f"{archive}: no entry starts with {members_prefix!r}; nothing was extracted"
                )
        for m in members:
            if (why := _refusal(m)) is not None:
                raise UnsafeArchiveError(
                    f"{archive}: refusing entry {_name(m)!r}: {why}; nothing was extracted"
                )
        tops = sorted({t for m in members if (t := _top(_name(m))) is not None})
        bar = tqdm(
            members,
            desc=archive.name[:40],
            unit="file",
            file=_progress_stream(),
            mininterval=1.0,
            leave=False,
        )
        with scratch_dir(dest_dir) as staging:
            if isinstance(handle, tarfile.TarFile):
                handle.extractall(staging, members=bar, filter="data")
            else:
                for info in bar:  # one at a time, so that a damaged entry is named
                    try:
                        handle.extract(info, staging)
                    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                        raise zipfile.BadZipFile(f"entry {info.filename!r}: {exc}") from exc
            dest_dir.mkdir(parents=True, exist_ok=True)
            for top in tops:
                final = dest_dir / top
                if final.is_dir() and not final.is_symlink():
                    shutil.rmtree(final)
                elif final.exists() or final.is_symlink():
                    final.unlink()
                os.replace(staging / top, final)
    return tops


def _name(info: zipfile.ZipInfo | tarfile.TarInfo) -> str:
    return info.filename if isinstance(info, zipfile.ZipInfo) else info.name


def fetch_and_unpack(archives, wanted, root: Path, *, section: str, hint: str) -> None:
    """Fetch and verify every archive of ``wanted`` (``{config key: (member prefix, files it provides)}``) into
    ``root/archives`` before extracting any (a failed download leaves nothing extracted), then unpack under
    ``root`` each archive whose files are not all there yet. ``archives`` is the config's ``section``;
    ``hint`` (with ``{key}``) is added to a download error."""
    zips = {}
    for key in wanted:
        if key not in archives:
            raise KeyError(f"{section} has no entry {key!r} (url and checksums); add it to the config")
        try:
            zips[key] = fetch_archive(archives[key], root / "archives", where=f"{section}.{key}")
        except DownloadError as err:
            raise DownloadError(f"{err}\n{hint.format(key=key)}") from err
    for key, (members, provides) in wanted.items():
        if not all(_unpacked(Path(p)) for p in provides):
            extract_archive(zips[key], root, members_prefix=members)
    for key, (_, provides) in wanted.items():
        for p in provides:
            if not Path(p).exists():
                raise FileNotFoundError(f"{p} missing after extracting {section}.{key}")


def _unpacked(path: Path) -> bool:
    """An extracted file, or a non-empty extracted folder."""
    return path.is_file() or (path.is_dir() and any(path.iterdir()))
