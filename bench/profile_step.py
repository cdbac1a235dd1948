"""Time the trainer's own pre-training step (random weights) and, with --trace, say where its time goes.

    python -m bench.profile_step --preset base --batch 2 --reps 3 --retain_host_memory
    python -m bench.profile_step --preset tiny --trace /tmp/prof --top 30
    python -m bench.profile_step --preset base --phase forward --batch 4 --attention_impl cpu_kernel --retain_host_memory

The step is `train.make_train_step` on `configs/pretrain.py` (MLM + ITM, AdamW, the non-finite
guard), on one device, with the inputs of `bench.vs_pytorch`. It prints the first call (compile +
one step), the timed steps, the process's peak RSS and how many CPUs the steps kept busy (CPU time
over wall time; threads spinning for work count as busy). `--phase forward` times the MLM forward
of `bench.vs_pytorch` instead (inference, the same model and inputs). With --trace it also records
one step with `jax.profiler`, dumps the optimised HLO (XLA_FLAGS, set before JAX starts), and
prints the ops that took longest, summed over the step and labelled with their HLO `op_name` (layer
numbers folded), so that "which fusion is slow" reads as "which part of the model, forward or
backward".
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny", choices=("tiny", "base"))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--text_len", type=int, default=40)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--phase", default="train", choices=("train", "forward"),
                   help="train: the trainer's step; forward: the MLM forward (inference)")
    p.add_argument("--dtype", default="auto", help="compute dtype; auto = float32 on CPU, bfloat16 elsewhere")
    p.add_argument("--attention_impl", default="auto", choices=("auto", "xla", "fused", "cpu_kernel"),
                   help="auto: as bench.vs_pytorch (cpu_kernel on CPU where it can be built, fused elsewhere)")
    p.add_argument("--scan_layers", action="store_true")
    p.add_argument("--remat", action="store_true")
    p.add_argument("--dropout_impl", default="hash", choices=("threefry", "hash"))
    p.add_argument("--retain_host_memory", action="store_true",
                   help="keep freed large host blocks for reuse (bridgetower_jax/host_memory.py; re-executes "
                        "this process with the large-block cache preloaded)")
    p.add_argument("--trace", help="directory for the profiler trace and the HLO dump")
    p.add_argument("--top", type=int, default=25, help="rows of the per-op table")
    return p.parse_args(argv)


def peak_rss_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1e6
    return float("nan")


def op_names(hlo_path: str) -> dict[str, str]:
    """HLO instruction name -> its op_name metadata (where in the JAX program it came from)."""
    names = {}
    pattern = re.compile(r"\s*(?:ROOT )?%([\w.\-]+) = .*?op_name=\"([^\"]*)\"")
    with open(hlo_path) as f:
        for line in f:
            m = pattern.match(line)
            if m:
                names.setdefault(m.group(1), m.group(2))
    return names


def top_ops(trace_dir: str, hlo_dir: str, top: int, module: str = "train_step") -> tuple[list, float]:
    """[(ms, calls, op kind, op_name with layer numbers folded)], longest first, and the ms of the traced
    step during which at least one op ran (the union of their intervals: nested and overlapping ops
    count once)."""
    traces = sorted(glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "*.trace.json.gz")))
    hlos = sorted(glob.glob(os.path.join(hlo_dir, f"*{module}*cpu_after_optimizations.txt"))
                  or glob.glob(os.path.join(hlo_dir, f"*{module}*after_optimizations.txt")))
    if not traces or not hlos:
        print(f"no {'profiler trace' if not traces else 'optimised HLO dump'} of {module} in "
              f"{trace_dir if not traces else hlo_dir}: no per-op table", flush=True)
        return [], 0.0
    trace, hlo = traces[-1], hlos[-1]
    names = op_names(hlo)
    with gzip.open(trace) as f:
        events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
    # GPU kernels carry their HLO instruction as the "hlo_op" argument; where there are such events,
    # only they count (host-side events of the same ops would count twice). CPU events are named by it.
    kernels = [(e, e["args"]["hlo_op"]) for e in events if (e.get("args") or {}).get("hlo_op") in names]
    matched = kernels or [(e, e["name"]) for e in events if e.get("name") in names]
    total, calls = collections.defaultdict(float), collections.Counter()
    for e, op in matched:
        where = re.sub(r"_\d+\b", "_N", names[op].replace(f"jit({module})/", ""))
        key = (re.sub(r"\.\d+$", "", op), where)
        total[key] += e["dur"] / 1e3
        calls[key] += 1
    busy_us, end = 0.0, float("-inf")
    for start, stop in sorted((e["ts"], e["ts"] + e["dur"]) for e, _ in matched):
        busy_us += max(0.0, stop - max(start, end))
        end = max(end, stop)
    rows = sorted(((ms, calls[k], *k) for k, ms in total.items()), reverse=True)
    return rows[:top], busy_us / 1e3


def main(argv=None) -> None:
    a = parse_args(argv)
    from bridgetower_jax import host_memory
    if a.retain_host_memory:
        os.environ[host_memory.ENV] = "1"
    host_memory.retain_freed_memory()
    hlo_dir = os.path.join(a.trace, "hlo") if a.trace else None
    module = "train_step" if a.phase == "train" else "mlm_forward"
    if hlo_dir:
        os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), f"--xla_dump_to={hlo_dir}",
                                            f"--xla_dump_hlo_module_re=.*{module}.*"]).strip()
    import jax
    from flax import linen as nn
    from bench.vs_pytorch import make_inputs, model_config, page_faults, pixels_in_compute_dtype, resolve_compute
    from bridgetower_jax import sharding, train
    from configs import pretrain

    device = jax.devices()[0]
    dtype, attention = resolve_compute(device.platform, a.dtype, a.attention_impl)
    cfg = model_config(a.preset, dict(dtype=dtype, attention_impl=attention, scan_layers=a.scan_layers,
                                      remat=a.remat, dropout_impl=a.dropout_impl))
    exp_cfg = pretrain.get_config("base")
    with exp_cfg.unlocked():
        exp_cfg.model = type(exp_cfg.model)(cfg.to_dict())
        exp_cfg.batch_size, exp_cfg.mesh.data, exp_cfg.mesh.num_devices = a.batch, 1, 1
        exp_cfg.data.max_text_len = a.text_len
        exp_cfg.objectives.itc = 0.0
    exp = train.build_experiment(exp_cfg)
    with exp.context():
        state = jax.jit(lambda r: nn.meta.unbox(exp.init_fn(r)), out_shardings=exp.state_sharding)(
            jax.random.PRNGKey(0))
    batch = sharding.global_batch(pixels_in_compute_dtype(cfg, make_inputs(cfg, a.batch, a.text_len, 0)), exp.mesh)
    if a.phase == "train":
        step = train.make_train_step(exp)
    else:
        from bridgetower_jax.models import BridgeTowerForPreTraining

        @jax.jit
        def mlm_forward(params, b):      # the logits, as the bench's forward, and their mean for the printout
            logits = exp.model.apply({"params": params}, b["input_ids"], b["attention_mask"], b["pixel_values"],
                                     method=BridgeTowerForPreTraining.mlm)
            return logits, logits.mean()

        def step(state, b):      # the state is unchanged
            logits, mean = mlm_forward(state.params, b)
            return state, {"logits": logits, "loss": mean}

    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    print(f"{a.preset} {a.phase} batch {a.batch} on {device.device_kind}, {dtype}, attention {attention}, "
          f"scan_layers {a.scan_layers}, remat {a.remat}: first call (compile + step) "
          f"{time.perf_counter() - start:.1f} s", flush=True)
    times, faults, cpu = [], page_faults(), time.process_time()
    for _ in range(a.reps):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - start)
    faults = (page_faults() - faults) / max(a.reps, 1)
    # CPU time of all threads over wall time: how many cores the step keeps busy (spinning counts as busy).
    busy = (time.process_time() - cpu) / max(sum(times), 1e-9)
    cache = host_memory.stats()
    cached = f"; large-block cache {cache['mapped_bytes'] / 1e9:.2f} GB mapped" if cache else ""
    device_peak = (device.memory_stats() or {}).get("peak_bytes_in_use") if device.platform != "cpu" else None
    memory = f"device peak {device_peak / 1e9:.2f} GB; " if device_peak else ""
    # MFU as bench.vs_pytorch counts it, where the device's peak is known (accelerators).
    from bridgetower_jax import flops
    work = (flops.train_flops_per_example(cfg, "pretrain", a.text_len) if a.phase == "train" else
            flops.forward_flops(cfg, a.text_len) + flops.mlm_head_flops(cfg, a.text_len)) * a.batch
    peak = flops.peak_flops_per_device()
    median = sorted(times)[len(times) // 2] if times else None
    mfu = (f"{work / median / 1e12:.1f} model TFLOP/s, MFU {100 * work / median / peak:.1f} % of "
           f"{peak / 1e12:g} TFLOP/s; " if peak and median else "")
    print("step s: " + " ".join(f"{t:.3f}" for t in times) + f"; loss {float(metrics['loss']):.4f}; {mfu}{memory}"
          f"peak RSS {peak_rss_gb():.2f} GB; {faults / 1e3:.0f}k page faults per step; {busy:.2f} of "
          f"{len(os.sched_getaffinity(0))} CPUs busy{cached}", flush=True)
    if not a.trace:
        return
    jax.profiler.start_trace(a.trace)
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    traced_ms = (time.perf_counter() - start) * 1e3
    jax.profiler.stop_trace()
    rows, busy_ms = top_ops(a.trace, hlo_dir, a.top, module)
    # On an accelerator: how busy the device was (well below 1: the step waits on launches or the host).
    # On a CPU: the time at least one thread ran an op.
    print(f"\nsome op ran during {busy_ms:.1f} ms of the traced step's {traced_ms:.1f} ms "
          f"({100 * busy_ms / traced_ms:.0f} %{'; the device busy fraction' if device.platform != 'cpu' else ''})")
    print(f"longest ops of one traced step (summed over calls; threads may overlap):\n{'ms':>9} {'calls':>5}  "
          f"{'op kind':24} where (HLO op_name)")
    for ms, n, kind, where in rows:
        print(f"{ms:9.1f} {n:5d}  {kind[:24]:24} {where[-110:]}")


if __name__ == "__main__":
    sys.exit(main())
