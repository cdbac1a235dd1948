"""bridgetower_jax.metric_writer: metrics.jsonl and TensorBoard events, in a local workdir and at a URL
(fsspec's in-process memory:// stands in for gs://, which goes through the same code)."""
import os
import struct

import fsspec
import pytest
from tensorboardX.proto import event_pb2

from bridgetower_jax.metric_writer import MetricWriter, read_metrics


def _scalars(event_file_bytes: bytes) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every scalar in a TFRecord-framed event file."""
    found, at = [], 0
    while at < len(event_file_bytes):
        (length,) = struct.unpack("<Q", event_file_bytes[at:at + 8])
        event = event_pb2.Event.FromString(event_file_bytes[at + 12:at + 12 + length])
        found += [(event.step, v.tag, round(v.simple_value, 6)) for v in event.summary.value]
        at += 12 + length + 4
    return found


@pytest.fixture
def memory_bucket():
    memory = fsspec.filesystem("memory")
    yield memory
    if memory.exists("/bucket"):
        memory.rm("/bucket", recursive=True)


def _write_run(workdir: str, resume_step: int = 0, steps=(1, 2)) -> MetricWriter:
    writer = MetricWriter(workdir, resume_step=resume_step, enabled=True)
    for step in steps:
        writer.write(step, {"loss": 3.0 - step, "lr": 1e-3 * step})
    return writer


def test_url_workdir_gets_tensorboard_events_and_metrics(memory_bucket, tmp_path):
    writer = _write_run("memory://bucket/run")
    writer._tb.flush()   # what tensorboardX does every 120 s: the events so far are in the store
    events = [p for p in memory_bucket.find("/bucket/run/tensorboard") if "tfevents" in p]
    assert len(events) == 1
    assert (1, "loss", 2.0) in _scalars(memory_bucket.cat(events[0]))
    writer.write(3, {"loss": 0.5})
    writer.close()
    url_scalars = _scalars(memory_bucket.cat(events[0]))
    assert url_scalars == [(1, "loss", 2.0), (1, "lr", 0.001), (2, "loss", 1.0), (2, "lr", 0.002), (3, "loss", 0.5)]
    assert [r["step"] for r in read_metrics("memory://bucket/run")] == [1, 2, 3]

    # A local workdir gets the same events.
    local = _write_run(str(tmp_path), steps=(1, 2, 3))
    local.close()
    (local_file,) = os.listdir(tmp_path / "tensorboard")
    local_scalars = _scalars((tmp_path / "tensorboard" / local_file).read_bytes())
    assert local_scalars[:4] == url_scalars[:4]


def test_resumed_url_run_replaces_the_records_after_its_checkpoint(memory_bucket):
    _write_run("memory://bucket/run", steps=(1, 2, 3)).close()
    # Resumed from the step-2 checkpoint: step 3 is trained again and its record replaced.
    resumed = MetricWriter("memory://bucket/run", resume_step=2, enabled=True)
    resumed.write(3, {"loss": 7.0})
    resumed.close()
    assert [(r["step"], r["loss"]) for r in read_metrics("memory://bucket/run")] == [(1, 2.0), (2, 1.0), (3, 7.0)]
