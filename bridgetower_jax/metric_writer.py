"""Training records: WORKDIR/metrics.jsonl (one JSON object per logged step) and TensorBoard events.

Only process 0 writes; other processes get a writer that does nothing. The JSON-lines file is
rewritten whole (`paths.write_text`) because object stores such as gs:// cannot append; records
of an earlier run in the same workdir are kept, and records from steps after a resume point are
replaced. clu's metric writers need TensorFlow to import, so TensorBoard files come from
tensorboardX, in WORKDIR/tensorboard: local, or a URL (gs://) written through fsspec like every
other file of the run.
"""
from __future__ import annotations

import io
import json
import logging
import math
import os

import jax
from bridgetower_jax import paths

METRICS_FILE = "metrics.jsonl"


class MetricWriter:
    def __init__(self, workdir, resume_step: int = 0, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._tb = None
        self._path = os.path.join(str(workdir), METRICS_FILE)
        self._records = [r for r in read_metrics(workdir) if r["step"] <= resume_step] if self.enabled else []
        if self.enabled:
            from tensorboardX import SummaryWriter
            if "://" in str(workdir):
                from tensorboardX import record_writer
                # Ours replaces tensorboardX's own gs:// writer, which needs google-cloud-storage.
                record_writer.register_writer_factory(str(workdir).split("://")[0], _UrlEventFiles())
            self._tb = SummaryWriter(os.path.join(str(workdir), "tensorboard"))

    def write(self, step: int, scalars: dict) -> None:
        if not self.enabled:
            return
        record = {"step": int(step)}
        for k, v in scalars.items():
            v = float(v)
            record[k] = v if math.isfinite(v) else str(v)   # JSON has no NaN / inf
            if self._tb is not None:
                self._tb.add_scalar(k, v, int(step))
        self._records.append(record)
        paths.write_text(self._path, "".join(json.dumps(r) + "\n" for r in self._records))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


class _WholeObjectEventFile:
    """An event file at a URL. tensorboardX appends records and flushes every 120 s and at close; an
    object store cannot append, so the bytes so far are kept here and each flush rewrites the whole
    object (a run's scalars make a few MB at most)."""

    def __init__(self, url: str):
        self.url, self.buffer, self.flushed = url, io.BytesIO(), -1

    def write(self, data: bytes) -> None:
        self.buffer.write(data)

    def flush(self) -> None:
        if self.buffer.tell() == self.flushed:
            return
        try:
            paths.write_bytes(self.url, self.buffer.getvalue())
        except Exception as e:   # noqa: BLE001 - tensorboardX's writer thread would die, and training block on its queue
            logging.getLogger("bridgetower_jax").warning(
                "TensorBoard events not written to %s (%s: %s); the next flush tries again", self.url,
                type(e).__name__, e)
            return
        self.flushed = self.buffer.tell()

    def close(self) -> None:
        self.flush()


class _UrlEventFiles:
    """tensorboardX's writer factory interface (record_writer.register_writer_factory)."""

    def open(self, url: str) -> _WholeObjectEventFile:
        return _WholeObjectEventFile(url)

    def directory_check(self, url: str) -> None:
        paths.make_directory(url, "--workdir")


def read_metrics(workdir) -> list[dict]:
    """All records of WORKDIR/metrics.jsonl, in order."""
    path = os.path.join(str(workdir), METRICS_FILE)
    # paths.is_file, not exists(): a refused or failed read of gs:// must not look like "no records yet",
    # which would let the next write replace the run's history.
    if not paths.is_file(path, "--workdir"):
        return []
    return [json.loads(line) for line in paths.read_text(path, "--workdir").splitlines() if line.strip()]
