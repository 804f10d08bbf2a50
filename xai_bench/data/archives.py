"""Unpacking a data-set archive (``.tar.gz``, ``.tgz``, ``.tar``) once, verified.

The unpacked copy is keyed by the archive's SHA-256 (``<name>-<first 16 hex digits>``), so a
rebuilt archive, even of the same size and name, is unpacked anew instead of being served from
the old copy. An archive is verified completely while it is unpacked, and the copy is renamed
into place only then:

* gzip: the whole compressed stream is read, so its CRC-32 and length are checked;
* tar: every member is read, and the member list must end with the end-of-archive block
  (Python's ``tarfile`` stops silently at a damaged header after the first member).

A corrupt or truncated archive is one :class:`DataError` line naming it; nothing is cached.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

from xai_bench.data.errors import DataError
from xai_bench.storage.content_hashes import file_content_sha256

__all__ = ["ARCHIVE_SUFFIXES", "archive_stem", "unpacked_dir", "unpack_verified"]

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
BLOCK = 512


class CorruptArchive(Exception):
    """Raised inside the verification with the reason; becomes one DataError line."""


def archive_stem(archive: Path) -> str:
    name = Path(archive).name
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def unpacked_dir(archive: Path, parent: Path, sha256: str | None = None) -> Path:
    """Where ``archive`` is unpacked under ``parent``: keyed by its content."""
    sha256 = sha256 or file_content_sha256(archive)
    return Path(parent) / f"{archive_stem(archive)}-{sha256[:16]}"


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _drain(stream):
    """Read ``stream`` to its end (a gzip stream checks its CRC and length there)."""
    while stream.read(1 << 20):
        pass


def _unpack_into(archive: Path, dest: Path):
    """Unpack every member of ``archive`` into ``dest``, verifying the whole archive; raises
    :class:`CorruptArchive` with the reason."""
    with open(archive, "rb") as raw:
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if _is_gzip(archive) else raw
        with tarfile.open(fileobj=stream, mode="r:") as tar:
            members = tar.getmembers()  # walks every header (and the data between them)
            if not members:
                raise CorruptArchive("no files in it")
            _check_end_block(tar)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                tar.extractall(dest, members=_safe_members(members, dest))
        _drain(stream)


def _check_end_block(tar: tarfile.TarFile):
    """The header after the last member must be the all-zero end-of-archive block: anything
    else (a damaged header, the end of the data) means members were lost."""
    tar.fileobj.seek(tar.offset)
    block = tar.fileobj.read(BLOCK)
    if len(block) < BLOCK:
        raise CorruptArchive(f"it ends after {len(tar.members)} files without the tar "
                             f"end-of-archive block (truncated)")
    if block.count(0) != BLOCK:
        raise CorruptArchive(f"damaged tar header after {len(tar.members)} files")


def _safe_members(members, dest: Path):
    """Members that stay inside ``dest`` (for Pythons without tarfile's ``data`` filter)."""
    dest = dest.resolve()
    for m in members:
        target = (dest / m.name).resolve()
        if (m.isfile() or m.isdir()) and str(target).startswith(str(dest) + os.sep):
            yield m


def unpack_verified(archive: Path, parent: Path) -> Path:
    """``archive`` unpacked under ``parent`` (keyed by its SHA-256), verified; reused when
    already there. Unpacks into a temporary sibling renamed into place when complete, so a
    partial or corrupt copy is never used or kept (and concurrent unpackers are harmless)."""
    archive = Path(archive)
    target = unpacked_dir(archive, parent)
    if target.is_dir():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-unpack-"))
    except OSError as e:
        raise DataError(f"cannot unpack {archive} into {target.parent} ({e.strerror}): make it "
                        f"writable or set XAI_BENCH_DATA to another folder") from None
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
        _unpack_into(archive, tmp)
        _rename_into_place(tmp, target)
    except (CorruptArchive, tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = " ".join(str(e).split())[:120] or type(e).__name__
        raise DataError(f"archive {archive} is corrupt ({reason}); download it again") from None
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"cannot unpack {archive} into {target.parent} "
                        f"({e.strerror or e}): free space there or set XAI_BENCH_DATA to "
                        f"another folder") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _rename_into_place(tmp: Path, target: Path):
    try:
        os.rename(tmp, target)
    except OSError:
        if not target.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another process got there first
