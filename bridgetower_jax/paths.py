"""Files and directories given as local paths or as URLs (gs://): one place that knows the difference.

Local paths go through `os`; URLs through fsspec (as etils.epath does), whose gs:// needs gcsfs (pinned in
launch/requirements-gcs.txt, which `launch/launch.py tpu setup` installs). A missing file system
is an error that names the setting and the package.
"""
from __future__ import annotations

import contextlib
import os

GCS_REQUIREMENTS = "launch/requirements-gcs.txt"


def _is_url(path: str) -> bool:
    return "://" in path


def _url_filesystem(path: str, key: str, action: str):
    """(fsspec file system, path within it); a missing package for the scheme (gs://: gcsfs) is a
    ValueError naming `key` and what to install."""
    import fsspec
    try:
        return fsspec.core.url_to_fs(path)
    except ImportError as e:
        needs = f", install gcsfs (pip install -r {GCS_REQUIREMENTS})" if path.startswith("gs://") else ""
        raise ValueError(f"{key}: cannot {action} {path} ({type(e).__name__}: {e}){needs}") from None


def make_directory(path: str, key: str, fix: str = "fix the path") -> None:
    """mkdir -p `path`, or ValueError naming `key` (the flag or config key that gave it) and `fix`."""
    try:
        if _is_url(path):
            filesystem, inner = _url_filesystem(path, key, "create")
            filesystem.makedirs(inner, exist_ok=True)
        else:
            os.makedirs(path, exist_ok=True)
    except ValueError:
        raise
    except Exception as e:        # noqa: BLE001 - file systems raise anything
        raise ValueError(f"{key}: cannot create {path} ({type(e).__name__}: {e}); {fix}") from None


def is_directory(path: str, key: str) -> bool:
    """os.path.isdir for paths and URLs; `key` names the setting in errors."""
    return os.path.isdir(path) if not _is_url(path) else _url_kind(path, key) == "directory"


def is_file(path: str, key: str) -> bool:
    """os.path.isfile for paths and URLs."""
    return os.path.isfile(path) if not _is_url(path) else _url_kind(path, key) == "file"


def _url_kind(path: str, key: str) -> str | None:
    """"file", "directory", or None where nothing is there. Only "not found" means None: a refused
    permission or a network error is an error (etils' exists()/is_dir() would read them as "absent",
    and "not a directory" or "build the dataset first" would send the user the wrong way)."""
    filesystem, inner = _url_filesystem(path, key, "read")
    try:
        return filesystem.info(inner).get("type")
    except FileNotFoundError:
        return None
    except Exception as e:        # noqa: BLE001 - remote file systems raise anything
        raise ValueError(f"{key}: cannot read {path} ({type(e).__name__}: {e})") from None


def read_text(path: str, key: str) -> str:
    """The UTF-8 text of a file or URL; `key` names the setting in errors."""
    if not _is_url(path):
        with open(path, encoding="utf-8") as f:
            return f.read()
    filesystem, inner = _url_filesystem(path, key, "read")
    with filesystem.open(inner, "rb") as f:
        return f.read().decode("utf-8")


def write_text(path: str, text: str) -> None:
    """`write_bytes` of the UTF-8 text."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str, data: bytes) -> None:
    """Write `path` so that it appears whole or not at all (a preempted job never leaves half a file,
    a failed write keeps the previous one). Local: a temporary file next to it, flushed to disk,
    renamed over `path` (one writer per file: process 0). URLs: one upload of the whole object with
    its size given (fsspec's pipe_file): an object store publishes it only once every byte has
    arrived. (Not a file opened for writing: gcsfs finishes its upload at close(), even when an
    exception cut the writing short.)"""
    path = str(path)
    if _is_url(path):
        filesystem, inner = _url_filesystem(path, "writing", "write")
        filesystem.pipe_file(inner, data)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # A fixed name: what a killed write left behind is overwritten by the next one. os.open with
    # 0o666 (not mkstemp's 0o600): the file gets the permissions the umask gives.
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
