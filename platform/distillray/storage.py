"""Paths that may be local or any URI pyarrow understands (file://, s3://, gs://, hdfs://).

Shards, checkpoints and exported models go where every node of a cluster can read them; on one
machine that is a local dir. All file I/O of shard dirs goes through these helpers, so the same
code serves both.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pyarrow.fs as pafs


def is_uri(path: str) -> bool:
    return "://" in str(path)


def resolve(path: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI."""
    path = str(path)
    if is_uri(path):
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), str(Path(path).absolute())


def join(base: str, *parts: str) -> str:
    """`base/parts...`; a URI's query string (s3://b/p?endpoint_override=...) stays at the end."""
    base = str(base)
    if not is_uri(base):
        return str(Path(base).joinpath(*parts))
    path, sep, query = base.partition("?")
    return "/".join([path.rstrip("/"), *parts]) + sep + query


def split(path: str) -> tuple[str, str]:
    """(parent, name) of a local path or URI (a URI's query string stays with the parent)."""
    path = str(path)
    if not is_uri(path):
        p = Path(path)
        return str(p.parent), p.name
    body, sep, query = path.partition("?")
    parent, _, name = body.rstrip("/").rpartition("/")
    return parent + sep + query, name


def is_remote(path: str) -> bool:
    """True for object storage (s3://, gs://, hdfs://): not a path this process can open.
    Decided from the scheme alone (resolving an s3:// URI already talks to the bucket)."""
    return is_uri(path) and not str(path).startswith(("file://", "local://"))


def local_path(path: str) -> Path | None:
    """The local filesystem path for a local path or file:// URI; None for remote storage."""
    if is_remote(path):
        return None
    fs, p = resolve(path)
    return Path(p) if isinstance(fs, pafs.LocalFileSystem) else None


def exists(path: str) -> bool:
    fs, p = resolve(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def is_file(path: str) -> bool:
    fs, p = resolve(path)
    return fs.get_file_info(p).type == pafs.FileType.File


def makedirs(path: str) -> None:
    fs, p = resolve(path)
    fs.create_dir(p, recursive=True)


def listdir(path: str) -> list[str]:
    """Base names of the files directly under `path` ([] when it does not exist)."""
    fs, p = resolve(path)
    if fs.get_file_info(p).type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(p, recursive=False))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.File)


def size_of(paths: list[str]) -> int:
    """Total bytes of the files at `paths` (one metadata call each)."""
    total = 0
    for path in paths:
        fs, p = resolve(path)
        total += fs.get_file_info(p).size or 0
    return total


def read_bytes(path: str) -> bytes:
    fs, p = resolve(path)
    with fs.open_input_stream(p) as f:
        return f.read()


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write to a temporary name beside `path`, then move it into place.

    On a local filesystem the move is a rename, so a reader (or a resumed run) never sees a
    half-written file; a process killed mid-write leaves only a `.tmp-*` file behind.
    """
    fs, p = resolve(path)
    parent, name = p.rsplit("/", 1)
    tmp = f"{parent}/.tmp-{uuid.uuid4().hex[:12]}-{name}"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, p)


def delete(path: str) -> None:
    fs, p = resolve(path)
    info = fs.get_file_info(p)
    if info.type == pafs.FileType.File:
        fs.delete_file(p)
    elif info.type == pafs.FileType.Directory:
        fs.delete_dir(p)


def sha256_of(path: str) -> str:
    fs, p = resolve(path)
    h = hashlib.sha256()
    with fs.open_input_stream(p) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Whole directories between local disk and remote storage (model dirs, run outputs)


def for_ray(path: str) -> tuple[str, pafs.FileSystem | None]:
    """(storage_path, storage_filesystem) for a Ray Train / Tune RunConfig: object storage as its
    filesystem and the path inside it; a local path made absolute and created."""
    if is_remote(path):
        return resolve(path)[::-1]
    local = local_path(path).resolve()
    local.mkdir(parents=True, exist_ok=True)
    return str(local), None


def upload_dir(local_dir: str | Path, dest: str) -> str:
    """Copy a local dir's files (recursively) to `dest`, local or remote; returns `dest`."""
    fs, path = resolve(dest)
    fs.create_dir(path, recursive=True)
    pafs.copy_files(str(Path(local_dir).absolute()), path, destination_filesystem=fs)
    return dest


def _listing(fs: pafs.FileSystem, path: str) -> list[tuple[str, int, int]]:
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    return sorted((i.path[len(path):].lstrip("/"), i.size or 0, i.mtime_ns or 0)
                  for i in infos if i.type == pafs.FileType.File)


def cache_root() -> Path:
    """Where remote dirs are downloaded to on each node ($DISTILLRAY_CACHE or ~/.cache/distillray)."""
    return Path(os.environ.get("DISTILLRAY_CACHE") or Path.home() / ".cache" / "distillray") / "remote"


def materialize(path: str) -> Path:
    """A local dir with the contents of `path`: itself when local, else a download.

    Downloads are cached per node under cache_root(), keyed by the URI and its file listing
    (names, sizes, mtimes), so a rewritten dir is fetched again and an unchanged one is not
    (object-store mtimes have 1 s resolution: a same-size rewrite within that second is missed).
    The download lands in a temporary dir renamed into place: concurrent readers on one node
    never see half a model.
    """
    local = local_path(path)
    if local is not None:
        return local
    fs, p = resolve(path)
    listing = _listing(fs, p)
    if not listing:
        raise FileNotFoundError(f"{path}: nothing there (no files under it)")
    key = hashlib.sha256(repr((str(path), listing)).encode()).hexdigest()[:20]
    target = cache_root() / key
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        pafs.copy_files(p, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        os.rename(tmp, target)
    except OSError:
        if not target.is_dir():  # not a lost race with another reader of the same dir
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def staging_dir(uri: str) -> Path:
    """The local dir where a run with a remote output dir writes its small driver-side files
    (report, metrics, plots, tune results) before upload_dir puts them under the URI."""
    key = hashlib.sha256(str(uri).encode()).hexdigest()[:16]
    return cache_root().parent / "staging" / key


def check_writable(uri: str) -> None:
    """Write and delete a probe file under `uri`: missing buckets, credentials or permissions
    fail here, before any cluster work, instead of after an hour of training."""
    fs, p = resolve(uri)
    probe = f"{p.rstrip('/')}/.distillray-write-probe-{uuid.uuid4().hex[:8]}"
    with fs.open_output_stream(probe) as f:
        f.write(b"ok")
    fs.delete_file(probe)
