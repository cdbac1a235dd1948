"""Directories given as local paths or as URLs (gs://): created before anything runs, or an error
that names the setting and, for gs://, the package its file system needs."""
from __future__ import annotations

import os

GCS_REQUIREMENTS = "launch/requirements-gcs.txt"     # gcsfs, pinned; `launch/launch.py tpu setup` installs it


def make_directory(path: str, key: str, fix: str = "fix the path") -> None:
    """mkdir -p `path`, or ValueError naming `key` (the flag or config key that gave it) and `fix`."""
    try:
        if "://" in path:
            from etils import epath
            epath.Path(path).mkdir(parents=True, exist_ok=True)
        else:
            os.makedirs(path, exist_ok=True)
    except Exception as e:      # noqa: BLE001 - file systems raise anything (ImportError for a missing gcsfs)
        needs = f", install gcsfs (pip install -r {GCS_REQUIREMENTS})" if path.startswith("gs://") else ""
        raise ValueError(f"{key}: cannot create {path} ({type(e).__name__}: {e}); {fix}{needs}") from None
