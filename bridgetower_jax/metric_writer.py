"""Training records: WORKDIR/metrics.jsonl (one JSON object per logged step) and TensorBoard events.

Only process 0 writes; other processes get a writer that does nothing. The JSON-lines file is
rewritten whole (`paths.write_text`) because object stores such as gs:// cannot append; records
of an earlier run in the same workdir are kept, and records from steps after a resume point are
replaced. clu's metric writers need TensorFlow to import, so TensorBoard files come from
tensorboardX, for local workdirs.
"""
from __future__ import annotations

import json
import logging
import math

import jax
from etils import epath

from bridgetower_jax import paths

METRICS_FILE = "metrics.jsonl"


class MetricWriter:
    def __init__(self, workdir, resume_step: int = 0, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._tb = None
        self._path = epath.Path(workdir) / METRICS_FILE
        self._records = [r for r in read_metrics(workdir) if r["step"] <= resume_step] if self.enabled else []
        if self.enabled and "://" not in str(workdir):
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(str(epath.Path(workdir) / "tensorboard"))
        elif self.enabled:
            logging.getLogger("bridgetower_jax").warning(
                "TensorBoard events are written for local workdirs only; %s gets metrics.jsonl", workdir)

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
        paths.write_text(str(self._path), "".join(json.dumps(r) + "\n" for r in self._records))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir) -> list[dict]:
    """All records of WORKDIR/metrics.jsonl, in order."""
    path = epath.Path(workdir) / METRICS_FILE
    # paths.is_file, not exists(): a refused or failed read of gs:// must not look like "no records yet",
    # which would let the next write replace the run's history.
    if not paths.is_file(str(path), "--workdir"):
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
