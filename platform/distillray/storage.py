"""Paths that may be local or any URI pyarrow understands (file://, s3://, gs://, hdfs://).

Shards, checkpoints and exported models go where every node of a cluster can read them; on one
machine that is a local dir. All file I/O of shard dirs goes through these helpers, so the same
code serves both.
"""

from __future__ import annotations

import hashlib
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
    base = str(base)
    return "/".join([base.rstrip("/"), *parts]) if is_uri(base) else str(Path(base).joinpath(*parts))


def local_path(path: str) -> Path | None:
    """The local filesystem path for a local path or file:// URI; None for remote storage."""
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
