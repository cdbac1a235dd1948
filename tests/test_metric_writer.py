"""bridgetower_jax.metric_writer: metrics.jsonl and TensorBoard events, in a local workdir and at a URL
(fsspec's in-process memory:// stands in for gs://, which goes through the same code)."""
import os
import struct
import time

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


def _event_files(memory) -> list[str]:
    return [p for p in memory.find("/bucket/run/tensorboard") if "tfevents" in p]


def test_url_workdir_gets_tensorboard_events_and_metrics(memory_bucket, tmp_path):
    writer = _write_run("memory://bucket/run")
    # What tensorboardX does every 120 s: the events its writer thread has taken so far reach the store.
    deadline = time.time() + 30
    while time.time() < deadline:
        writer._tb.flush()
        if any((1, "loss", 2.0) in _scalars(memory_bucket.cat(f)) for f in _event_files(memory_bucket)):
            break
        time.sleep(0.05)
    else:
        pytest.fail("a flush did not publish the first step's events")
    writer.write(3, {"loss": 0.5})
    writer.close()
    (events,) = _event_files(memory_bucket)
    url_scalars = _scalars(memory_bucket.cat(events))
    assert url_scalars == [(1, "loss", 2.0), (1, "lr", 0.001), (2, "loss", 1.0), (2, "lr", 0.002), (3, "loss", 0.5)]
    assert [r["step"] for r in read_metrics("memory://bucket/run")] == [1, 2, 3]

    # A local workdir gets the same events.
    local = _write_run(str(tmp_path), steps=(1, 2, 3))
    local.close()
    (local_file,) = os.listdir(tmp_path / "tensorboard")
    local_scalars = _scalars((tmp_path / "tensorboard" / local_file).read_bytes())
    assert local_scalars[:4] == url_scalars[:4]


def test_a_failed_upload_is_retried_and_never_blocks_training(memory_bucket, monkeypatch):
    from bridgetower_jax import metric_writer, paths
    failures = []
    real = paths.write_bytes

    def flaky(url, data):
        if "tfevents" in url and not failures:
            failures.append(url)
            raise OSError("503 Service Unavailable")
        real(url, data)
    monkeypatch.setattr(metric_writer.paths, "write_bytes", flaky)
    writer = _write_run("memory://bucket/run", steps=range(1, 30))   # more events than tensorboardX's queue holds
    writer._tb.flush()
    writer.close()
    assert failures
    (events,) = _event_files(memory_bucket)
    assert sum(1 for step, tag, _ in _scalars(memory_bucket.cat(events)) if tag == "loss") == 29


def test_resumed_url_run_replaces_the_records_after_its_checkpoint(memory_bucket):
    _write_run("memory://bucket/run", steps=(1, 2, 3)).close()
    # Resumed from the step-2 checkpoint: step 3 is trained again and its record replaced.
    resumed = MetricWriter("memory://bucket/run", resume_step=2, enabled=True)
    resumed.write(3, {"loss": 7.0})
    resumed.close()
    assert [(r["step"], r["loss"]) for r in read_metrics("memory://bucket/run")] == [(1, 2.0), (2, 1.0), (3, 7.0)]
