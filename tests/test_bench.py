"""Smoke tests of bench/vs_pytorch.py: both workers start, each phase runs once, the JSON has its fields.

Timings are not checked (the machine is shared); parity of the two sides' first logits is.
"""
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@pytest.fixture
def no_simulated_devices(monkeypatch):
    # The workers are fresh processes: give them the real single CPU device, not the tests' 8.
    monkeypatch.delenv("XLA_FLAGS", raising=False)


def _check_results(r: dict, phases: set[str]):
    """What every run's JSON holds, whichever phases it ran."""
    from bench import vs_pytorch
    assert r["preset"] == "tiny" and r["device"] == "cpu" and r["threads"] >= 1
    # auto on CPU, float32: the kernel where a C++ compiler can build it
    assert r["compute"]["attention_impl"] == ("cpu_kernel" if shutil.which(os.environ.get("CXX", "c++")) else "xla")
    assert set(r["phases"]) == phases
    for phase, e in r["phases"].items():
        for side in ("jax", "torch"):
            for key in ("median_s", "min_s", "times_s", "peak_memory_bytes", "peak_memory_incl_warmup_bytes", "mfu"):
                assert key in e[side], (phase, side, key)
            assert e[side]["median_s"] > 0 and e[side]["peak_memory_bytes"] > 0
        assert e["ratio_time"] > 0 and e["ratio_memory"] > 0 and e["model_flops"] > 0
        assert e["jax"]["compile_s"] > 0 and e["jax"]["recompiles_during_timing"] == 0
    assert r["forward_b1_logits_max_abs_diff"] < 1e-3          # both sides run the same model
    assert set(r["cost_analysis"]) == {"forward_b1"} | {f"loss_and_grad_{p[len('train_'):]}" for p in phases
                                                          if p.startswith("train_")}
    for v in r["cost_analysis"].values():
        assert 0.8 < v["formula_over_xla"] < 1.2
    assert r["peak_flops"] > 0 and r["xla_flags"] == "" and r["jax_info"]["xla_flags"] == ""   # as the trainer
    # The forward's products timed alone: tiny at batch 1 has 17 image tokens (16 patches + CLS), width 128.
    assert r["gemms"]["vision fc1"]["shape_bmkn"] == [1, 17, 128, 512]
    assert r["gemms"]["attention q.k"]["shape_bmkn"] == [2, 17, 64, 17]
    assert set(r["gemms"]) == set(vs_pytorch.model_gemms(vs_pytorch.model_config("tiny", {}), 1, 8))
    for g in r["gemms"].values():
        assert g["jax_s"] > 0 and g["torch_s"] > 0 and g["ratio_time"] > 0


def test_vs_pytorch_tiny_forward_writes_every_field(tmp_path, no_simulated_devices):
    """--train_batch 0: the forward and re-rank phases alone (~15 s on the 2-core VM)."""
    from bench import vs_pytorch
    out = tmp_path / "tiny.json"
    vs_pytorch.main(["--preset", "tiny", "--text_len", "8", "--forward_batches", "1", "--train_batch", "0",
                     "--rerank_pairs", "6", "--rerank_texts_per_image", "3",
                     "--reps", "1", "--settle", "0", "--json", str(out)])
    r = json.loads(out.read_text())
    _check_results(r, {"forward_b1", "rerank_b6"})
    # 2 images x 3 texts through itm_shared_images give transformers' ITM logits of the 6 pairs.
    assert r["rerank_logits_max_abs_diff"] < 1e-4
    assert not r["retain_host_memory"] and not r["jax_info"]["large_block_cache"]


@pytest.mark.slow   # 23 s here, 53 s in a clean-clone CI run (the tiny train step compiles in both workers)
def test_vs_pytorch_tiny_writes_every_field(tmp_path, no_simulated_devices):
    """Every phase, the trainer's own train step included."""
    from bench import vs_pytorch
    out = tmp_path / "tiny.json"
    vs_pytorch.main(["--preset", "tiny", "--text_len", "8", "--forward_batches", "1", "--train_batch", "2",
                     "--reps", "1", "--train_reps", "1", "--settle", "0", "--retain_host_memory", "--json", str(out)])
    r = json.loads(out.read_text())
    _check_results(r, {"forward_b1", "train_b2"})
    assert r["retain_host_memory"] and r["jax_info"]["large_block_cache"] and r["torch_info"]["large_block_cache"]


@pytest.mark.parametrize("args", [["--forward_batches", "", "--train_batch", "0"], ["--train_batch", "-2"],
                                  ["--forward_batches", "0,4"], ["--rerank_pairs", "-8"]])
def test_impossible_phases_are_refused(args):
    from bench import vs_pytorch
    with pytest.raises(SystemExit, match="at least one phase"):
        vs_pytorch.main(["--preset", "tiny", *args])
    with pytest.raises(SystemExit, match="--rerank_pairs 6 must be a multiple of --rerank_texts_per_image 4"):
        vs_pytorch.main(["--preset", "tiny", "--rerank_pairs", "6", "--rerank_texts_per_image", "4"])


def test_plot_draws_one_bar_per_phase_and_a_tick_per_target(tmp_path):
    import xml.etree.ElementTree as ET
    from bench import plot
    files = [ROOT / "bench" / "results" / name for name in ("tiny_cpu.json", "base_cpu.json")]
    out = tmp_path / "ratios.svg"
    plot.main([str(f) for f in files] + ["--out", str(out)])
    ns = "{http://www.w3.org/2000/svg}"
    svg = ET.parse(out).getroot()
    results = [json.loads(f.read_text()) for f in files]
    ratios = [e["ratio_time"] for r in results for e in r["phases"].values()]
    rects = svg.findall(f"{ns}rect")
    assert len(rects) == len(ratios)
    # Bar lengths follow the ratios; red exactly where a phase misses its target.
    widths = [float(r.get("width")) for r in rects]
    assert all(abs(w / widths[0] - q / ratios[0]) < 1e-2 for w, q in zip(widths, ratios))
    rows = plot.bars(results)
    assert [r.get("fill") == "#e45756" for r in rects] == [t is not None and q > t for _, q, t in rows]
    ticks = [line for line in svg.findall(f"{ns}line") if line.get("stroke") == "black"]
    assert len(ticks) == sum(t is not None for _, _, t in rows) == 3     # base train, base forward_b4, tiny train


def test_plot_labels_name_the_cpu():
    """Ratios against PyTorch depend on the CPU (its GEMM library's path), so CPU bars say which one."""
    from bench import plot
    assert plot.machine({"device": "cpu", "cpu_model": "Intel(R) Xeon(R) Processor"}) == "cpu Intel Xeon"
    assert plot.machine({"device": "cpu", "cpu_model": "AMD EPYC 9B45 128-Core Processor"}) == "cpu AMD EPYC"
    assert plot.machine({"device": "gpu", "cpu_model": "AMD EPYC"}) == "gpu"
    labels = [label for label, _, _ in plot.bars([json.loads((ROOT / "bench" / "results" / name).read_text())
                                                  for name in ("base_cpu.json", "base_cpu_epyc.json")])]
    assert labels[0] == "base cpu Intel Xeon forward_b1" and labels[-1] == "base cpu AMD EPYC train_b2"


def test_auto_compute_settings(monkeypatch, tmp_path):
    """What "auto" means, shared by bench.vs_pytorch and bench.profile_step (a run of either that does
    not name them measures the same program)."""
    from bench.vs_pytorch import resolve_compute
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    assert resolve_compute("cpu", "auto", "auto") == ("float32", "cpu_kernel" if compiler else "xla")
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    assert resolve_compute("cpu", "auto", "auto") == ("float32", "xla")       # nothing can build the kernel
    assert resolve_compute("cpu", "bfloat16", "auto") == ("bfloat16", "xla")  # the kernel is float32 only
    assert resolve_compute("gpu", "auto", "auto") == ("bfloat16", "fused")
    assert resolve_compute("tpu", "float32", "xla") == ("float32", "xla")       # named settings stay


@pytest.mark.slow
def test_profile_step_traces_a_step_and_labels_its_ops(no_simulated_devices, tmp_path):
    """bench/profile_step.py as bench/accelerator.sh runs it (--trace), on the tiny preset: the step's
    ops come back labelled with where in the model they are, and their sum is set against the wall time."""
    import re
    import subprocess
    result = subprocess.run([sys.executable, "-m", "bench.profile_step", "--preset", "tiny", "--reps", "1",
                             "--trace", str(tmp_path / "trace"), "--top", "5"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"step s: [\d.]+; loss [\d.]+;", out), out
    busy = re.search(r"some op ran during ([\d.]+) ms of the traced step's ([\d.]+) ms", out)
    assert busy and 0.3 * float(busy.group(2)) < float(busy.group(1)) <= float(busy.group(2)), out
    rows = re.findall(r"^\s+([\d.]+)\s+(\d+)\s+(\S+)\s+(\S.*)$", out.split("longest ops")[1], re.M)
    assert len(rows) == 5 and all(int(calls) >= 1 for _, calls, _, _ in rows), out
    assert any("mlm" in where for *_, where in rows), out       # labelled with the model's parts
