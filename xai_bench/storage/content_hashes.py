"""Content digests of files and folders, with a persistent per-file hash cache.

A data set's identity is a digest of the bytes it serves, so a folder's digest covers every
file's SHA-256 (symbolic links followed, also a linked split folder such as ``test -> ...``),
keyed by its path relative to the folder. Hashing 60,000 files on every run would be slow, so
each file's SHA-256 is cached on disk (:func:`hash_cache_dir`) under a key that a replacement
cannot imitate: the resolved path, size, modification *and* status-change times (ns), inode and
device. ``os.utime`` can restore a replaced file's mtime but not its ctime (the kernel sets it
on every write, rename or ``utime``), and a file written anew gets a new inode.

A file whose ctime lies within :data:`RACY_SECONDS` of the moment it was hashed is not cached
(it could still be changed within the same timestamp tick without its ctime moving), the way
git treats "racily clean" index entries; it is simply hashed again next time.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ["hash_cache_dir", "file_content_sha256", "tree_digest", "RACY_SECONDS"]

#: files changed this recently (ctime, seconds) when hashed are not cached
RACY_SECONDS = 2.0
CACHE_VERSION = 1
CHUNK = 1 << 20
#: how many folders' (and archives') hash caches are kept (the oldest are removed)
MAX_ROOTS = 256


def hash_cache_dir() -> Path:
    """``$XAI_BENCH_CACHE/file-hashes``, else ``~/.cache/xai_bench/file-hashes``."""
    root = os.environ.get("XAI_BENCH_CACHE")
    root = Path(root).expanduser() if root else Path.home() / ".cache" / "xai_bench"
    return root / "file-hashes"


def _sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _stat_key(st: os.stat_result) -> list:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


class _HashCache:
    """The cached SHA-256s of the files under one root (one JSON file per root); entries not
    seen in this pass are dropped when it is saved."""

    def __init__(self, root_real: str):
        name = hashlib.sha256(root_real.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        self.path = hash_cache_dir() / f"{name}.json"
        self.root = root_real
        self.old = self._load()
        self.new: dict = {}

    def _load(self) -> dict:
        try:
            blob = json.loads(self.path.read_text(encoding="utf-8"))
            if blob.get("version") == CACHE_VERSION and blob.get("root") == self.root:
                return dict(blob.get("files", {}))
        except (OSError, ValueError, AttributeError):
            pass  # no cache yet, or an unreadable one: hash again
        return {}

    def lookup(self, real: str, key: list) -> str | None:
        entry = self.old.get(real)
        if isinstance(entry, list) and entry[:-1] == key:
            self.new[real] = entry
            return entry[-1]
        return None

    def store(self, real: str, key: list, sha: str, hashed_at_ns: int):
        if hashed_at_ns - key[2] > RACY_SECONDS * 1e9:
            self.new[real] = key + [sha]

    def save(self):
        if self.new == self.old:
            return
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"version": CACHE_VERSION, "root": self.root,
                                       "files": self.new}), encoding="utf-8")
            os.replace(tmp, self.path)
            _prune(self.path.parent)
        except OSError:  # a read-only cache only costs time: the digests are still right
            try:
                tmp.unlink()
            except OSError:
                pass


def _prune(directory: Path):
    """Keep the :data:`MAX_ROOTS` most recently written per-root caches (every folder ever
    fingerprinted has one; old temporary folders' would otherwise accumulate)."""
    caches = list(directory.glob("*.json"))
    if len(caches) > MAX_ROOTS:
        caches.sort(key=lambda p: p.stat().st_mtime_ns)
        for old in caches[:-MAX_ROOTS]:
            old.unlink(missing_ok=True)


def _walk(directory: str, real_dir: str, rel: str, ancestors: frozenset, out: list):
    """Append ``(relative path, path to read, resolved path)`` for every file under
    ``directory`` (links followed), or ``(relative path, None, reason)`` for what cannot be
    read (a broken link, a link loop), in sorted order."""
    try:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        out.append((rel or ".", None, f"unreadable folder ({e.strerror})"))
        return
    for entry in entries:
        relpath = f"{rel}{entry.name}"
        linked = entry.is_symlink()
        real = os.path.realpath(entry.path) if linked else os.path.join(real_dir, entry.name)
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
            is_file = not is_dir and entry.is_file(follow_symlinks=True)
        except OSError:
            is_dir = is_file = False
        if is_dir:
            if real in ancestors:
                out.append((relpath, None, "link loop"))
            else:
                _walk(entry.path, real, relpath + "/", ancestors | {real}, out)
        elif is_file:
            out.append((relpath, entry.path, real))
        elif linked:
            out.append((relpath, None, f"broken link to {os.readlink(entry.path)}"))
        # sockets, fifos, devices: not data


def _hash_files(files: list, cache: _HashCache) -> dict:
    """``{index: sha256 or reason}`` for ``files`` = ``[(path, resolved path)]``: cached
    digests where the key still matches, else read (in threads: hashlib and file reads release
    the GIL)."""
    results, todo = {}, []
    for i, (path, real) in enumerate(files):
        try:
            key = _stat_key(os.stat(path))
        except OSError as e:
            results[i] = f"unreadable ({e.strerror})"
            continue
        sha = cache.lookup(real, key)
        if sha is None:
            todo.append((i, path, real, key))
        else:
            results[i] = sha

    def work(item):
        i, path, real, key = item
        started = time.time_ns()
        try:
            sha = _sha256_of(path)
        except OSError as e:
            return i, f"unreadable ({e.strerror})"
        cache.store(real, key, sha, started)
        return i, sha

    if todo:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            results.update(pool.map(work, todo))
    return results


def file_content_sha256(path) -> str:
    """A file's SHA-256, through the persistent hash cache."""
    real = os.path.realpath(path)
    cache = _HashCache(real)
    sha = _hash_files([(str(path), real)], cache)[0]
    cache.save()
    if len(sha) != 64:
        raise OSError(f"{path} is {sha}")
    return sha


def tree_digest(path) -> str:
    """SHA-256 over every file under the folder ``path`` (links followed): its relative path
    and content SHA-256 (or why it cannot be read, so that the loader's own error decides)."""
    real_root = os.path.realpath(path)
    entries: list = []
    _walk(str(path), real_root, "", frozenset({real_root}), entries)
    readable = [(i, p, r) for i, (_, p, r) in enumerate(entries) if p is not None]
    cache = _HashCache(real_root)
    hashes = _hash_files([(p, r) for _, p, r in readable], cache)
    cache.save()
    by_entry = {i: hashes[k] for k, (i, _, _) in enumerate(readable)}
    h = hashlib.sha256()
    for i, (relpath, _, reason) in enumerate(entries):
        h.update(relpath.encode("utf-8", "surrogateescape") + b"\0")
        h.update(by_entry.get(i, reason).encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()
