"""bridgetower_jax.paths: local paths and gs:// URLs behind one set of calls (no bucket is reached:
gs:// is checked with gcsfs hidden, as on a machine without launch/requirements-gcs.txt)."""
import os
import stat
import sys

import pytest

from bridgetower_jax import paths


def test_write_text_replaces_whole_files_with_the_umask_permissions(tmp_path):
    target = tmp_path / "new" / "dir" / "out.json"
    paths.write_text(str(target), "first")
    paths.write_text(str(target), "second")
    assert target.read_text() == "second" and os.listdir(target.parent) == ["out.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask      # not mkstemp's 0600


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    paths.write_text(str(target), "old")

    def full(fd):
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="disk full"):
        paths.write_text(str(target), "new")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.json"]


def test_a_temporary_left_by_a_killed_write_is_reused(tmp_path):
    (tmp_path / ".out.json.tmp").write_text("half of an old wri")
    paths.write_text(str(tmp_path / "out.json"), "whole")
    assert (tmp_path / "out.json").read_text() == "whole" and os.listdir(tmp_path) == ["out.json"]


def test_url_probes_tell_absent_from_unreadable(tmp_path):
    """memory:// (fsspec's in-process file system) stands in for gs://: absent is False, a failure of the
    store is an error naming the setting (not "absent", which would send the user to rebuild data)."""
    import fsspec
    memory = fsspec.filesystem("memory")
    memory.pipe("/bt/data/info.json", b"{}")
    assert paths.is_directory("memory://bt/data", "k") and not paths.is_file("memory://bt/data", "k")
    assert paths.is_file("memory://bt/data/info.json", "k")
    assert not paths.is_directory("memory://bt/nothing", "k") and not paths.is_file("memory://bt/nothing", "k")

    def refused(self, path, **kwargs):
        raise PermissionError("403 Forbidden")
    original = type(memory).info
    type(memory).info = refused
    try:
        with pytest.raises(ValueError, match=r"config.data.data_dir: cannot read memory://bt/data "
                                             r"\(PermissionError: 403 Forbidden\)"):
            paths.is_directory("memory://bt/data", "config.data.data_dir")
    finally:
        type(memory).info = original
        memory.rm("/bt", recursive=True)


def test_local_probes(tmp_path):
    (tmp_path / "f").write_text("")
    assert paths.is_directory(str(tmp_path), "k") and not paths.is_directory(str(tmp_path / "f"), "k")
    assert paths.is_file(str(tmp_path / "f"), "k") and not paths.is_file(str(tmp_path / "missing"), "k")


def test_gs_without_gcsfs_names_the_setting_and_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "gcsfs", None)
    for call in (lambda: paths.is_directory("gs://b/data", "config.data.data_dir"),
                 lambda: paths.is_file("gs://b/data/x.json", "config.data.data_dir"),
                 lambda: paths.make_directory("gs://b/run", "--workdir"),
                 lambda: paths.write_text("gs://b/run/metrics.jsonl", "")):
        with pytest.raises(ValueError, match=r"^(config\.data\.data_dir|--workdir|writing): cannot (read|create|write) gs://b/.*"
                                             r"install gcsfs \(pip install -r launch/requirements-gcs\.txt\)"):
            call()


def test_the_gcs_requirements_pin_gcsfs():
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), paths.GCS_REQUIREMENTS)) as f:
        pins = [line for line in f.read().splitlines() if line and not line.startswith("#")]
    assert len(pins) == 1 and pins[0].startswith("gcsfs==")
