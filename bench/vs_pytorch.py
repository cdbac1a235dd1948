"""Side by side: this project's BridgeTower against transformers' BridgeTower (PyTorch), same run.

    python -m bench.vs_pytorch --preset tiny --retain_host_memory --json bench/results/tiny_cpu.json
    python -m bench.vs_pytorch --preset base --retain_host_memory --reps 4 --train_reps 10 --json bench/results/base_cpu.json
    python -m bench.vs_pytorch --preset base --device gpu --train_batch 32   # accelerator: bf16, fused attention
    python -m bench.vs_pytorch --preset base --forward_batches "" --train_batch 0 --rerank_pairs 16 --reps 3

What is measured, for the same config, the same weights (transformers' random init, converted with
`convert.from_pytorch`) and the same inputs:
  forward_b1 / forward_b4   MLM forward (inference, no dropout) at batch 1 and 4
  train_bN                  one pre-training step at batch N: MLM forward on masked text + ITM forward on
                            (text, image-or-negative), both losses, backward, AdamW. JAX runs the trainer's
                            own step (`train.build_experiment` + `train.make_train_step`, configs/pretrain.py);
                            PyTorch runs BridgeTowerForMaskedLM and BridgeTowerForImageAndTextRetrieval
                            sharing one core, with torch.optim.AdamW.
  rerank_bN                 retrieval's ITM re-rank of N (image, text) pairs over N / P images, each image
                            serving P texts (--rerank_pairs N, --rerank_texts_per_image P): JAX runs
                            `itm_shared_images` (the vision tower once per image), PyTorch
                            BridgeTowerForImageAndTextRetrieval on the N pairs (the vision tower once per
                            pair, as transformers' API takes them); its MFU counts the FLOPs of the shared
                            computation, and the positive logits of both sides are compared
  gemms                     the forward's main products at its largest batch (`model_gemms`), each timed
                            alone in both frameworks: how much of the forward ratio is the GEMM libraries.
Each framework lives in its own worker process, both pinned to the same CPUs, so peak memory is per
framework and per phase: the kernel's peak-RSS counter (VmHWM; on accelerators the device's peak bytes)
is reset after the warm-up calls and read after the timed calls, so it holds the persistent state (weights,
optimiser moments) plus the step's transient peak; the peak including warm-up (JAX: compilation) is
reported beside it. The parent warms
both up, then alternates single calls (J,T / T,J / ...) so that background load hits both alike, and
reports medians, JAX/PyTorch ratios, MFU and the JAX compile time (trace + lower + XLA compile, from
jax.monitoring) separately. The first MLM logits of both are compared as a check that both sides
compute the same model.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bridgetower_jax import host_memory
from bridgetower_jax.data.text import mlm_prediction_slots

PRESET_NAMES = ("tiny", "base")
MASK_ID, CLS_ID, EOS_ID = 4, 0, 2


# ---------------------------------------------------------------------------------------------
# Shared set-up (parent and workers)
# ---------------------------------------------------------------------------------------------
def model_config(preset: str, compute: dict):
    """The benchmark's model. "tiny" is the 128-wide, 2-layer model of reference/performance.md
    (full RoBERTa vocabulary, 64 px); "base" is BridgeTower-base at 288 px."""
    from bridgetower_jax.models import config as mc
    if preset == "base":
        cfg = mc.preset("base")
    elif preset == "tiny":
        cfg = mc.BridgeTowerConfig(
            text=mc.TextConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
            vision=mc.VisionConfig(hidden_size=128, num_hidden_layers=2, patch_size=16, image_size=64),
            hidden_size=128, num_hidden_layers=2)
    else:
        raise ValueError(f"--preset {preset!r}: choose one of {PRESET_NAMES}")
    return cfg.with_compute(**compute).validate()


def pixels_in_compute_dtype(cfg, inputs: dict) -> dict:
    """The JAX side's images in the compute dtype (the pipeline hands bf16 runs bf16 pixels)."""
    if cfg.compute.dtype == "float32":
        return inputs
    return {k: v.astype(cfg.compute.dtype) if k.endswith("pixel_values") else v for k, v in inputs.items()}


def make_inputs(cfg, batch: int, text_len: int, seed: int) -> dict:
    """Full-length text (CLS ... EOS, no padding), CLIP-normalised-like pixels (NHWC), 15 % MLM masking
    (at least one token per row), ITM pairs as the pipeline makes them: even rows matched, odd row 2k+1
    mismatched with the image of row 2k (`itm_negative_pixel_values[k]`)."""
    rng = np.random.default_rng(seed)
    size = cfg.vision.image_size
    ids = rng.integers(5, cfg.text.vocab_size, (batch, text_len)).astype(np.int32)
    ids[:, 0], ids[:, -1] = CLS_ID, EOS_ID
    mask = np.ones_like(ids)
    pixels = rng.standard_normal((batch, size, size, 3)).astype(np.float32)
    picked = rng.random((batch, text_len)) < 0.15
    picked[:, 0] = picked[:, -1] = False
    picked[np.arange(batch), rng.integers(1, text_len - 1, batch)] = True
    mlm_ids = np.where(picked, MASK_ID, ids).astype(np.int32)
    mlm_labels = np.where(picked, ids, -100).astype(np.int32)
    # As the pipeline's masking: never more predictions per row than the train step decodes.
    assert picked.sum(1).max() <= mlm_prediction_slots(text_len, 0.15), "reseed: a row masks too many tokens"
    return dict(input_ids=ids, attention_mask=mask, pixel_values=pixels, mlm_input_ids=mlm_ids,
                mlm_labels=mlm_labels, itm_negative_pixel_values=pixels[0:batch - 1:2],
                example_mask=np.ones(batch, np.int32))


def itm_pairs(batch: dict) -> tuple[np.ndarray, np.ndarray]:
    """(ITM image per row, ITM label per row) of a pipeline batch, for a model that takes them whole."""
    pixels, negatives = batch["pixel_values"], batch["itm_negative_pixel_values"]
    images = pixels.copy()
    images[1::2] = negatives
    return images, (1 - np.arange(len(pixels)) % 2).astype(np.int32)


def peak_rss_bytes() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def page_faults() -> int:
    """Minor + major page faults of this process so far (each fresh page a call touches costs ~1 us)."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:                  # not Linux
        return 0
    return int(fields[7]) + int(fields[9])


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM to the current RSS (kernel >= 4.0)."""
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)    # hand freed heap back so both sides start from what they hold
    except OSError:
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def best_seconds(call, sync, reps: int = 5) -> float:
    """Shortest of `reps` timed calls, after one untimed call (compilation, first touch)."""
    call()
    sync()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        call()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def gemm_flops_per_second(matmul, sync, n: int = 2048) -> float:
    """FLOP/s of the best n x n fp32 matmul: the practical CPU peak this process can reach."""
    return 2 * n ** 3 / best_seconds(matmul, sync)


def model_gemms(cfg, batch: int, text_len: int) -> dict[str, list[int]]:
    """The products that make up most of the MLM forward at `batch`, as [batch count, M, K, N]: each
    framework times them alone (`gemms` phase), which separates the GEMM libraries' speed on these
    shapes from everything else in the forward ratio."""
    v, t = cfg.vision, cfg.text
    rows, tokens, seq = batch * (v.num_patches + 1), batch * text_len, v.num_patches + 1
    head = v.hidden_size // v.num_attention_heads
    return {"vision qkv/out": [1, rows, v.hidden_size, v.hidden_size],
            "vision fc1": [1, rows, v.hidden_size, 4 * v.hidden_size],
            "vision fc2": [1, rows, 4 * v.hidden_size, v.hidden_size],
            "attention q.k": [batch * v.num_attention_heads, seq, head, seq],
            "attention p.v": [batch * v.num_attention_heads, seq, seq, head],
            "text qkv/out": [1, tokens, t.hidden_size, t.hidden_size],
            "mlm decoder": [1, tokens, t.hidden_size, t.vocab_size]}


# ---------------------------------------------------------------------------------------------
# Workers: one process per framework, driven over a pipe (one JSON object per line)
# ---------------------------------------------------------------------------------------------
class JaxWorker:
    def __init__(self, a):
        import jax
        self.jax, self.a = jax, a
        self.compile_events: list[tuple[str, float]] = []
        jax.monitoring.register_event_duration_secs_listener(
            lambda name, secs, **kw: self.compile_events.append((name, secs)) if name.startswith(
                "/jax/core/compile/") else None)

    def setup(self, weights_dir: str):
        import jax
        from bridgetower_jax import convert, train
        from configs import pretrain
        a = self.a
        compute = json.loads(a.compute)
        cfg = model_config(a.preset, compute)
        exp_cfg = pretrain.get_config("base")
        with exp_cfg.unlocked():
            exp_cfg.model = type(exp_cfg.model)(cfg.to_dict())
            exp_cfg.batch_size = a.train_batch or 2     # 0: no train step is built, but the config needs a valid size
            exp_cfg.mesh.data = 1
            exp_cfg.data.max_text_len = a.text_len
            exp_cfg.objectives.itc = 0.0
        self.cfg, self.exp = cfg, train.build_experiment(exp_cfg)
        # transformers' weights, converted: the core + MLM head from one class, the ITM head from the other.
        _, mlm = convert.from_pytorch(os.path.join(weights_dir, "mlm"), compute=cfg.compute)
        _, itm = convert.from_pytorch(os.path.join(weights_dir, "itm"), compute=cfg.compute)
        params = {"bridgetower": mlm["bridgetower"], "mlm_score": mlm["mlm_score"], "itm_score": itm["itm_score"]}
        del mlm, itm
        self.params = jax.device_put(params, self.exp.state_sharding.params)
        del params
        model = self.exp.model
        from bridgetower_jax.models import BridgeTowerForPreTraining

        def forward(p, ids, mask, pixels):
            return model.apply({"params": p}, ids, mask, pixels, method=BridgeTowerForPreTraining.mlm)

        def rerank(p, ids, mask, pixels):
            return model.apply({"params": p}, ids, mask, pixels, method=BridgeTowerForPreTraining.itm_shared_images)[:, 1]
        self.forward, self.rerank = jax.jit(forward), jax.jit(rerank)
        self.batches = {}
        self.state = self.train_step = None
        device = jax.devices()[0]
        return {"params": int(sum(x.size for x in jax.tree.leaves(self.params))), "device": device.device_kind,
                "platform": device.platform, "jax": jax.__version__,
                "xla_flags": os.environ.get("XLA_FLAGS", ""), "compute": cfg.compute.__dict__,
                "large_block_cache": host_memory.stats() is not None}

    def _batch(self, phase: str):
        if phase not in self.batches:
            from bridgetower_jax import sharding
            host = dict(np.load(os.path.join(self.a.workdir, f"inputs_{phase}.npz")))
            self.batches[phase] = sharding.global_batch(pixels_in_compute_dtype(self.cfg, host), self.exp.mesh)
        return self.batches[phase]

    def matmul_peak(self):
        import jax.numpy as jnp
        x = jnp.ones((2048, 2048), jnp.float32)
        mm = self.jax.jit(lambda a: a @ a)
        out = {}
        return {"gemm_flops": gemm_flops_per_second(lambda: out.__setitem__(0, mm(x)),
                                                     lambda: out[0].block_until_ready())}

    def gemm(self, shape: list) -> float:
        """Best seconds of one [batch count, M, K, N] product of `model_gemms`, alone, in the compute
        dtype (a count of 1 is a plain 2-D product, as the model's `Dense` layers compute it)."""
        import jax.numpy as jnp
        count, m, k, n = shape
        dtype, out, mm = jnp.dtype(self.cfg.compute.dtype), {}, self.jax.jit(jnp.matmul)
        a, b = jnp.ones((count, m, k)[count == 1:], dtype), jnp.ones((count, k, n)[count == 1:], dtype)
        return best_seconds(lambda: out.__setitem__(0, mm(a, b)), lambda: out[0].block_until_ready())

    def begin(self, phase: str):
        """Reset the peak counter, build what the phase needs, warm up (the first call compiles)."""
        self._reset_memory()
        if phase.startswith("train") and self.state is None:
            from bridgetower_jax import train
            exp = self.exp
            # As the trainer's init_from path: a fresh state holding the loaded weights and their moments.
            # Under jit the random parameters the fresh state would hold are dead code (never allocated).
            from flax import linen as nn

            def with_weights(params, rng):
                fresh = nn.meta.unbox(exp.init_fn(rng))
                return fresh.replace(params=params, opt_state=exp.tx.init(params))
            with exp.context():
                self.state = self.jax.jit(with_weights, out_shardings=exp.state_sharding, donate_argnums=0)(
                    self.params, self.jax.random.PRNGKey(0))
            self.params = None
            self.train_step = train.make_train_step(exp)
        self.compile_events.clear()
        start = time.perf_counter()
        self._call(phase)
        first = time.perf_counter() - start
        compile_s = {k.rsplit("/", 1)[-1]: 0.0 for k, _ in self.compile_events}
        for k, secs in self.compile_events:
            compile_s[k.rsplit("/", 1)[-1]] += secs
        self._call(phase)
        self.compile_events.clear()
        warm_peak = self._peak_memory()
        self._reset_memory()
        return {"first_call_s": first, "compile_s": sum(compile_s.values()), "compile_breakdown_s": compile_s,
                "peak_memory_incl_warmup_bytes": warm_peak}

    def _call(self, phase: str):
        b = self._batch(phase)
        if phase.startswith(("forward", "rerank")):
            call = self.forward if phase.startswith("forward") else self.rerank
            with self.exp.context():
                out = call(self.params, b["input_ids"], b["attention_mask"], b["pixel_values"])
            out.block_until_ready()
            return out
        self.state, metrics = self.train_step(self.state, b)
        self.jax.block_until_ready((self.state, metrics))
        return metrics

    def run(self, phase: str):
        faults, start = page_faults(), time.perf_counter()
        self._call(phase)
        secs = time.perf_counter() - start
        recompiles = sum(1 for k, _ in self.compile_events if k.endswith("backend_compile_duration"))
        self.compile_events.clear()
        return {"seconds": secs, "recompiles": recompiles, "page_faults": page_faults() - faults}

    def end(self, phase: str):
        out = {"peak_memory_bytes": self._peak_memory()}
        if phase == "forward_b1" or phase.startswith("rerank"):
            logits = np.asarray(self._call(phase), np.float32)
            np.save(os.path.join(self.a.workdir, f"logits_{phase}_jax.npy"), logits)
        return out

    def _reset_memory(self):
        if self.jax.devices()[0].platform == "cpu":
            reset_peak_rss()

    def _peak_memory(self) -> int:
        device = self.jax.devices()[0]
        if device.platform == "cpu":
            return peak_rss_bytes()
        return int((device.memory_stats() or {}).get("peak_bytes_in_use", 0))

    def cost_analysis(self):
        """XLA's flop count for the MLM forward (batch 1, if that phase ran) and for one loss+gradient (the
        train batch, if any)."""
        import jax
        from bridgetower_jax import flops, tasks
        exp, a = self.exp, self.a
        params = self.state.params if self.state is not None else self.params
        counts = {}
        if os.path.exists(os.path.join(a.workdir, "inputs_forward_b1.npz")):
            b1 = self._batch("forward_b1")
            # XLA counts no flops inside a custom call: the forward is counted on the exact attention path.
            from bridgetower_jax.models import BridgeTowerForPreTraining
            exact = exp.model.clone(config=self.cfg.with_compute(attention_impl="xla"))
            forward = jax.jit(lambda p, *x: exact.apply({"params": p}, *x, method=BridgeTowerForPreTraining.mlm))
            with exp.context():
                fwd = forward.lower(params, b1["input_ids"], b1["attention_mask"], b1["pixel_values"]).compile()
            fwd_formula = flops.forward_flops(self.cfg, a.text_len) + flops.mlm_head_flops(self.cfg, a.text_len)
            counts["forward_b1"] = {"xla_flops": _xla_flops(fwd), "formula_flops": fwd_formula}
        if a.train_batch:
            bt = self._batch(f"train_b{a.train_batch}")
            with exp.context():
                grad = jax.jit(jax.grad(lambda p, b, r: tasks.loss_and_metrics(exp.cfg, exp.model, p, b, r)[0])).lower(
                    params, bt, jax.random.PRNGKey(0)).compile()
            train_formula = flops.train_flops_per_example(self.cfg, "pretrain", a.text_len) * a.train_batch
            counts[f"loss_and_grad_b{a.train_batch}"] = {"xla_flops": _xla_flops(grad), "formula_flops": train_formula}
        return counts

    def device_peak(self):
        from bridgetower_jax import flops
        return {"peak_flops": flops.peak_flops_per_device()}


def _xla_flops(compiled) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost.get("flops", 0.0))


class TorchWorker:
    def __init__(self, a):
        import torch
        self.torch, self.a = torch, a
        torch.set_num_threads(len(os.sched_getaffinity(0)))
        self.device = torch.device("cuda" if a.device == "gpu" else "cpu")
        self.autocast = a.compute_dtype == "bfloat16"

    def setup(self, weights_dir: str):
        import torch
        import transformers
        a = self.a
        hf_config = transformers.BridgeTowerConfig.from_dict(json.loads(Path(a.workdir, "hf_config.json").read_text()))
        torch.manual_seed(a.seed)
        self.mlm = transformers.BridgeTowerForMaskedLM(hf_config)
        self.itm = transformers.BridgeTowerForImageAndTextRetrieval(hf_config)
        self.itm.bridgetower = self.mlm.bridgetower          # one core, two heads (as the JAX pre-training model)
        self.mlm.save_pretrained(os.path.join(weights_dir, "mlm"))
        self.itm.save_pretrained(os.path.join(weights_dir, "itm"))
        self.mlm.to(self.device)
        self.itm.to(self.device)
        params = list(self.mlm.parameters()) + list(self.itm.itm_score.parameters())
        self.params = params
        self.opt = None
        self.batches = {}
        return {"params": int(sum(p.numel() for p in params)), "torch": torch.__version__,
                "transformers": transformers.__version__, "threads": torch.get_num_threads(),
                "attn_implementation": self.mlm.config._attn_implementation,
                "large_block_cache": host_memory.stats() is not None}

    def _batch(self, phase: str):
        if phase not in self.batches:
            host = dict(np.load(os.path.join(self.a.workdir, f"inputs_{phase}.npz")))
            if phase.startswith("rerank"):     # transformers takes one image per pair
                host["pixel_values"] = np.repeat(host["pixel_values"], len(host["input_ids"]) // len(host["pixel_values"]), 0)
            host["itm_pixel_values"], host["itm_labels"] = itm_pairs(host)
            t = {k: self.torch.from_numpy(np.ascontiguousarray(
                v.transpose(0, 3, 1, 2) if v.ndim == 4 else v)) for k, v in host.items()}
            t = {k: (v.long() if v.dtype == self.torch.int32 else v).to(self.device) for k, v in t.items()}
            self.batches[phase] = t
        return self.batches[phase]

    def _sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def matmul_peak(self):
        x = self.torch.ones(2048, 2048, device=self.device)
        return {"gemm_flops": gemm_flops_per_second(lambda: x @ x, self._sync)}

    def gemm(self, shape: list) -> float:
        torch = self.torch
        count, m, k, n = shape
        dtype = torch.bfloat16 if self.autocast else torch.float32
        with torch.inference_mode():
            a, b = (torch.ones((count, m, k)[count == 1:], dtype=dtype, device=self.device),
                    torch.ones((count, k, n)[count == 1:], dtype=dtype, device=self.device))
            return best_seconds(lambda: torch.matmul(a, b), self._sync)

    def begin(self, phase: str):
        self._reset_memory()
        if phase.startswith("train") and self.opt is None:
            decay = [p for n, p in self._named() if p.ndim >= 2]
            no_decay = [p for n, p in self._named() if p.ndim < 2]
            kw = {"fused": True} if self.a.torch_adamw == "fused" else (
                {"foreach": True} if self.a.torch_adamw == "foreach" else {})
            self.opt = self.torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                               {"params": no_decay, "weight_decay": 0.0}],
                                              lr=1e-5, betas=(0.9, 0.98), eps=1e-8, **kw)
        start = time.perf_counter()
        self._call(phase)
        first = time.perf_counter() - start
        self._call(phase)
        warm_peak = self._peak_memory()
        self._reset_memory()
        return {"first_call_s": first, "peak_memory_incl_warmup_bytes": warm_peak}

    def _named(self):
        return list(self.mlm.named_parameters()) + list(self.itm.itm_score.named_parameters())

    def _call(self, phase: str):
        torch, b = self.torch, self._batch(phase)
        ctx = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast)
        if phase.startswith("forward"):
            self.mlm.eval()
            with torch.inference_mode(), ctx:
                out = self.mlm(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                               pixel_values=b["pixel_values"]).logits
            self._sync()
            return out
        if phase.startswith("rerank"):
            self.itm.eval()
            with torch.inference_mode(), ctx:
                out = self.itm(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                               pixel_values=b["pixel_values"]).logits[:, 1]
            self._sync()
            return out
        self.mlm.train()
        self.itm.train()
        self.opt.zero_grad(set_to_none=True)
        with ctx:
            mlm = self.mlm(input_ids=b["mlm_input_ids"], attention_mask=b["attention_mask"],
                           pixel_values=b["pixel_values"], labels=b["mlm_labels"])
            itm = self.itm(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                           pixel_values=b["itm_pixel_values"], labels=b["itm_labels"])
            loss = mlm.loss + itm.loss
        loss.backward()
        self.opt.step()
        self._sync()
        return loss

    def run(self, phase: str):
        faults, start = page_faults(), time.perf_counter()
        self._call(phase)
        return {"seconds": time.perf_counter() - start, "page_faults": page_faults() - faults}

    def end(self, phase: str):
        out = {"peak_memory_bytes": self._peak_memory()}
        if phase == "forward_b1" or phase.startswith("rerank"):
            logits = self._call(phase).float().cpu().numpy()
            np.save(os.path.join(self.a.workdir, f"logits_{phase}_torch.npy"), logits)
        return out

    def _reset_memory(self):
        if self.device.type == "cuda":
            self.torch.cuda.reset_peak_memory_stats()
        else:
            reset_peak_rss()

    def _peak_memory(self) -> int:
        if self.device.type == "cuda":
            return int(self.torch.cuda.max_memory_allocated())
        return peak_rss_bytes()


def worker_main(a) -> None:
    """Serve commands from the parent: {"cmd": name, "arg": ...} -> {"ok": result} or {"error": text}."""
    host_memory.retain_freed_memory()  # a no-op: the parent preloads the cache in both workers, or in neither
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)                      # library chatter goes to stderr, the protocol owns the real stdout
    worker = (JaxWorker if a.worker == "jax" else TorchWorker)(a)
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "quit":
            break
        try:
            result = {"ok": getattr(worker, msg["cmd"])(*msg.get("args", []))}
        except Exception as e:  # report to the parent, which stops the run with the traceback
            import traceback
            result = {"error": f"{type(e).__name__}: {e}\n{traceback.format_exc()}"}
        reply.write(json.dumps(result) + "\n")
        reply.flush()


class Remote:
    """The parent's handle on one worker process."""

    def __init__(self, name: str, argv: list[str], env: dict):
        self.name = name
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.vs_pytorch", "--worker", name] + argv,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=str(Path(__file__).resolve().parents[1]))

    def __call__(self, cmd: str, *args):
        self.proc.stdin.write(json.dumps({"cmd": cmd, "args": list(args)}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} worker died during {cmd!r} (exit code {self.proc.wait()})")
        msg = json.loads(line)
        if "error" in msg:
            raise RuntimeError(f"{self.name} worker failed in {cmd!r}:\n{msg['error']}")
        return msg["ok"]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()


# ---------------------------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------------------------
def detect_device(requested: str) -> str:
    if requested != "auto":
        return requested
    try:
        out = subprocess.run([sys.executable, "-c", "import jax; print(jax.devices()[0].platform)"],
                             capture_output=True, text=True, timeout=300)
        platform_name = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "cpu"
    except (subprocess.TimeoutExpired, OSError):
        platform_name = "cpu"
    return {"cuda": "gpu", "rocm": "gpu"}.get(platform_name, platform_name)


def worker_env(device: str, cpus: list[int], xla_flags: str, retain_host_memory: bool = False,
               huge_pages: bool = False) -> dict:
    env = host_memory.with_large_block_cache(dict(os.environ), on=retain_host_memory)   # both workers alike
    if huge_pages:
        env["GLIBC_TUNABLES"] = host_memory.with_huge_pages(env.get("GLIBC_TUNABLES", ""))
        env[host_memory.HUGE_PAGES_ENV] = "1"
    env.update(OMP_NUM_THREADS=str(len(cpus)), MKL_NUM_THREADS=str(len(cpus)), TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if device == "cpu":
        env.update(JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    else:
        env.pop("JAX_PLATFORMS", None)
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"   # the PyTorch worker shares the device
    if xla_flags:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + xla_flags).strip()
    else:
        env.pop("XLA_FLAGS", None)     # e.g. the tests' 8 simulated devices: one device here
    return env


def time_gemms(workers: dict, shapes: dict, rounds: int = 3) -> dict:
    """Each shape's best time per framework over `rounds`, the two workers alternating (as the phases)."""
    best = {name: {"jax": float("inf"), "torch": float("inf")} for name in shapes}
    for r in range(rounds):
        for name, shape in shapes.items():
            for side in (("jax", "torch") if r % 2 == 0 else ("torch", "jax")):
                best[name][side] = min(best[name][side], workers[side]("gemm", shape))
    return {name: {"shape_bmkn": shape, "jax_s": best[name]["jax"], "torch_s": best[name]["torch"],
                   "ratio_time": best[name]["jax"] / best[name]["torch"]} for name, shape in shapes.items()}


def summarize(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "n": len(times)}


def resolve_compute(device: str, dtype: str, attention_impl: str) -> tuple[str, str]:
    """(compute dtype, attention impl) with "auto" resolved for `device` ("cpu", "gpu", "tpu"): float32
    on CPU with the hand-written kernel where the host's C++ compiler (`$CXX`, default `c++`) can build
    it and the exact path otherwise; bfloat16 with fused attention on accelerators."""
    accelerator = device != "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if accelerator else "float32"
    if attention_impl == "auto":
        can_build = shutil.which(os.environ.get("CXX", "c++")) is not None
        attention_impl = "fused" if accelerator else "cpu_kernel" if dtype == "float32" and can_build else "xla"
    return dtype, attention_impl


def run_benchmark(a) -> dict:
    from bridgetower_jax import flops
    from bridgetower_jax.convert.hf_config import to_hf_config
    device = detect_device(a.device)
    accelerator = device != "cpu"
    compute_dtype, attention = resolve_compute(device, a.dtype, a.attention_impl)
    compute = dict(dtype=compute_dtype, attention_impl=attention, scan_layers=a.scan_layers, remat=a.remat,
                   dropout_impl=a.dropout_impl)
    cfg = model_config(a.preset, compute)
    cpus = sorted(os.sched_getaffinity(0))[: a.threads] if a.threads else sorted(os.sched_getaffinity(0))
    # rerank before train: the JAX worker's train phase moves the weights into its train state.
    phases = ([f"forward_b{b}" for b in a.forward_batches] + ([f"rerank_b{a.rerank_pairs}"] if a.rerank_pairs else [])
              + ([f"train_b{a.train_batch}"] if a.train_batch else []))

    workdir = tempfile.mkdtemp(prefix="bt_bench_")
    Path(workdir, "hf_config.json").write_text(json.dumps(to_hf_config(cfg).to_dict()))
    for phase in phases:
        batch = int(phase.rsplit("_b", 1)[1])
        inputs = make_inputs(cfg, batch, a.text_len, a.seed)
        if phase.startswith("rerank"):
            inputs["pixel_values"] = inputs["pixel_values"][:batch // a.rerank_texts_per_image]
        np.savez(os.path.join(workdir, f"inputs_{phase}.npz"), **inputs)
    argv = ["--preset", a.preset, "--workdir", workdir, "--text_len", str(a.text_len), "--train_batch",
            str(a.train_batch), "--device", device, "--compute", json.dumps(compute), "--compute_dtype",
            compute_dtype, "--torch_adamw", a.torch_adamw, "--seed", str(a.seed), "--cpus",
            ",".join(map(str, cpus))]
    env = worker_env(device, cpus, a.xla_flags, a.retain_host_memory, a.huge_pages)
    weights = os.path.join(workdir, "weights")
    results = {"preset": a.preset, "device": device, "text_len": a.text_len, "compute": compute,
               "threads": len(cpus), "cpus": cpus, "host": platform.node(), "cpu_model": _cpu_model(),
               "torch_adamw": a.torch_adamw, "xla_flags": a.xla_flags,
               "retain_host_memory": a.retain_host_memory, "huge_pages": a.huge_pages, "phases": {},
               "load_average_start": os.getloadavg()}
    print(f"bench.vs_pytorch: preset {a.preset}, device {device}, {compute_dtype}, attention {attention}, "
          f"scan {a.scan_layers}, remat {a.remat}, {len(cpus)} thread(s) on cpus {cpus}", flush=True)
    torch_w = Remote("torch", argv, env)
    jax_w = None
    try:
        results["torch_info"] = torch_w("setup", weights)      # creates and saves the weights
        jax_w = Remote("jax", argv, env)
        results["jax_info"] = jax_w("setup", weights)
        workers = {"jax": jax_w, "torch": torch_w}
        results["gemm_flops"] = {n: w("matmul_peak")["gemm_flops"] for n, w in workers.items()}
        gemm_batch = max(a.forward_batches or [a.train_batch])
        if gemm_batch:   # (not for a re-rank phase alone)
            results["gemms"] = time_gemms(workers, model_gemms(cfg, gemm_batch, a.text_len))
            print(gemm_table(results["gemms"]), flush=True)
        peak = a.peak_flops or (jax_w("device_peak")["peak_flops"] if accelerator else None)
        peak_source = "--peak_flops" if a.peak_flops else ("vendor bf16 dense peak (flops.PEAK_FLOPS)"
                                                            if peak else "measured fp32 GEMM 2048^2, best of both")
        peak = peak or max(results["gemm_flops"].values())
        results["peak_flops"], results["peak_flops_source"] = peak, peak_source
        for phase in phases:
            reps = a.train_reps if phase.startswith("train") else a.reps
            entry = {"jax": {}, "torch": {}}
            for name, w in workers.items():
                entry[name].update(w("begin", phase))
            times, faults = {"jax": [], "torch": []}, {"jax": [], "torch": []}
            recompiles = 0
            for r in range(reps):
                order = ("jax", "torch") if r % 2 == 0 else ("torch", "jax")
                for name in order:
                    time.sleep(a.settle)          # let the other side's spinning worker threads go idle
                    out = workers[name]("run", phase)
                    times[name].append(out["seconds"])
                    faults[name].append(out["page_faults"])
                    recompiles += out.get("recompiles", 0)
            for name, w in workers.items():
                entry[name].update(w("end", phase))
                entry[name].update(summarize(times[name]))
                entry[name]["times_s"] = times[name]
                entry[name]["page_faults_per_call"] = statistics.median(faults[name])
            entry["jax"]["recompiles_during_timing"] = recompiles
            entry["ratio_time"] = entry["jax"]["median_s"] / entry["torch"]["median_s"]
            entry["ratio_memory"] = entry["jax"]["peak_memory_bytes"] / max(entry["torch"]["peak_memory_bytes"], 1)
            batch = int(phase.rsplit("_b", 1)[1])
            if phase.startswith("train"):
                work = flops.train_flops_per_example(cfg, "pretrain", a.text_len) * batch
            elif phase.startswith("rerank"):
                image_side = flops.image_side_flops(cfg)
                work = (batch // a.rerank_texts_per_image * image_side
                        + batch * (flops.forward_flops(cfg, a.text_len, pooled_only=True) - image_side))
            else:
                work = (flops.forward_flops(cfg, a.text_len) + flops.mlm_head_flops(cfg, a.text_len)) * batch
            entry["model_flops"] = work
            for name in ("jax", "torch"):
                entry[name]["mfu"] = work / entry[name]["median_s"] / peak
            results["phases"][phase] = entry
            print(_row(phase, entry), flush=True)
            if phase == "forward_b1" or phase.startswith("rerank"):
                diff = np.abs(np.load(os.path.join(workdir, f"logits_{phase}_jax.npy"))
                              - np.load(os.path.join(workdir, f"logits_{phase}_torch.npy"))).max()
                results["forward_b1_logits_max_abs_diff" if phase == "forward_b1" else "rerank_logits_max_abs_diff"] = \
                    float(diff)
        results["load_average_end"] = os.getloadavg()
        # XLA's cost analysis counts a while loop's body once, so scanned layers would be undercounted.
        if not (a.skip_cost_analysis or a.scan_layers):
            ca = jax_w("cost_analysis")
            for v in ca.values():
                v["formula_over_xla"] = v["formula_flops"] / v["xla_flops"] if v["xla_flops"] else None
            results["cost_analysis"] = ca
    finally:
        for w in (jax_w, torch_w):
            if w is not None:
                w.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


HEADER = (f"{'phase':<12}{'JAX med s':>11}{'torch med s':>12}{'ratio':>7}{'JAX MFU':>9}{'torch MFU':>10}"
          f"{'JAX peak GB':>12}{'torch peak GB':>14}{'compile s':>10}")


def _row(phase: str, e: dict) -> str:
    j, t = e["jax"], e["torch"]
    return (f"{phase:<12}{j['median_s']:>11.4f}{t['median_s']:>12.4f}{e['ratio_time']:>7.2f}"
            f"{100 * j['mfu']:>8.1f}%{100 * t['mfu']:>9.1f}%{j['peak_memory_bytes'] / 1e9:>12.2f}"
            f"{t['peak_memory_bytes'] / 1e9:>14.2f}{j['compile_s']:>10.1f}")


def gemm_table(gemms: dict) -> str:
    lines = [f"{'GEMM alone':<16}{'batch x M x K x N':>22}{'JAX ms':>9}{'torch ms':>10}{'ratio':>7}"]
    for name, g in gemms.items():
        lines.append(f"{name:<16}{' x '.join(map(str, g['shape_bmkn'])):>22}{1e3 * g['jax_s']:>9.2f}"
                     f"{1e3 * g['torch_s']:>10.2f}{g['ratio_time']:>7.2f}")
    return "\n".join(lines)


def print_table(r: dict) -> None:
    print()
    print(f"{r['preset']} on {r['device']} ({r['cpu_model']}, {r['threads']} threads), {r['compute']['dtype']}, "
          f"text {r['text_len']}; peak {r['peak_flops'] / 1e9:.0f} GFLOP/s ({r['peak_flops_source']})")
    print(HEADER)
    for phase, e in r["phases"].items():
        print(_row(phase, e))
    if "gemms" in r:
        print(gemm_table(r["gemms"]))
    if "forward_b1_logits_max_abs_diff" in r:
        print(f"forward_b1 MLM logits, max |JAX - torch| = {r['forward_b1_logits_max_abs_diff']:.2e}")
    if "rerank_logits_max_abs_diff" in r:
        print(f"rerank ITM logits, max |JAX - torch| = {r['rerank_logits_max_abs_diff']:.2e}")
    for name, v in r.get("cost_analysis", {}).items():
        print(f"flops.py vs XLA cost analysis, {name}: formula {v['formula_flops'] / 1e9:.2f} G, "
              f"XLA {v['xla_flops'] / 1e9:.2f} G, ratio {v['formula_over_xla']:.3f}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny", choices=PRESET_NAMES)
    p.add_argument("--device", default="auto", help="auto, cpu, gpu or tpu (auto: what JAX finds)")
    p.add_argument("--dtype", default="auto", help="compute dtype; auto = float32 on CPU, bfloat16 elsewhere")
    p.add_argument("--attention_impl", default="auto",
                   help="xla, fused or cpu_kernel; auto = cpu_kernel on CPU (float32, with a C++ compiler), "
                        "fused elsewhere")
    p.add_argument("--scan_layers", action="store_true")
    p.add_argument("--remat", action="store_true")
    p.add_argument("--retain_host_memory", action="store_true",
                   help="both workers keep freed large host blocks for reuse (the large-block cache, "
                        "bridgetower_jax/host_memory.py)")
    p.add_argument("--huge_pages", action="store_true",
                   help="both workers back malloc'd memory with transparent huge pages (GLIBC_TUNABLES and "
                        "the large-block cache's range, bridgetower_jax/host_memory.py); best with "
                        "--retain_host_memory")
    p.add_argument("--dropout_impl", default="hash", choices=("threefry", "hash"),
                   help="compute.dropout_impl of the JAX model (hash: fused counter-hash masks)")
    p.add_argument("--text_len", type=int, default=40)
    p.add_argument("--forward_batches", type=lambda s: [int(x) for x in s.split(",") if x], default=[1, 4],
                   help="comma-separated; empty: no forward phases")
    p.add_argument("--train_batch", type=int, default=2, help="0: no train phase")
    p.add_argument("--rerank_pairs", type=int, default=0, help="pairs of the retrieval re-rank phase (0: none)")
    p.add_argument("--rerank_texts_per_image", type=int, default=8, help="texts sharing each image in the re-rank")
    p.add_argument("--reps", type=int, default=10, help="timed calls per framework for each forward phase")
    p.add_argument("--train_reps", type=int, default=10, help="timed calls per framework for the train step")
    p.add_argument("--threads", type=int, default=0, help="CPUs for each worker (0: all this process may use)")
    p.add_argument("--xla_flags", default="", help="XLA_FLAGS for the JAX worker (default: none, as the trainer)")
    p.add_argument("--torch_adamw", default="default", choices=("default", "foreach", "fused"),
                   help="torch.optim.AdamW implementation (default: what torch picks for the device)")
    p.add_argument("--peak_flops", type=float, default=0.0, help="device peak FLOP/s for MFU (default: measured "
                   "GEMM peak on CPU, vendor peak on accelerators)")
    p.add_argument("--settle", type=float, default=0.05, help="seconds of idle before each timed call")
    p.add_argument("--skip_cost_analysis", action="store_true",
                   help="skip checking flops.py against XLA's cost analysis (skipped anyway with --scan_layers; "
                        "the forward is checked when forward_b1 runs, the gradient when a train phase does)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write all numbers here")
    # worker-only
    p.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument("--compute", help=argparse.SUPPRESS)
    p.add_argument("--compute_dtype", help=argparse.SUPPRESS)
    p.add_argument("--cpus", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> dict | None:
    a = parse_args(argv)
    if not a.worker and (a.train_batch < 0 or a.rerank_pairs < 0 or any(b < 1 for b in a.forward_batches)
                         or not (a.forward_batches or a.train_batch or a.rerank_pairs)):
        raise SystemExit(f"bench.vs_pytorch: --forward_batches {a.forward_batches}, --train_batch {a.train_batch} and "
                         f"--rerank_pairs {a.rerank_pairs}: batches must be positive (0: no train / re-rank phase), "
                         "and at least one phase is needed")
    if not a.worker and a.rerank_pairs and (a.rerank_texts_per_image < 1 or a.rerank_pairs % a.rerank_texts_per_image):
        raise SystemExit(f"bench.vs_pytorch: --rerank_pairs {a.rerank_pairs} must be a multiple of "
                         f"--rerank_texts_per_image {a.rerank_texts_per_image}")
    if a.worker:
        os.sched_setaffinity(0, [int(c) for c in a.cpus.split(",")])   # before jax / torch size their pools
        worker_main(a)
        return None
    results = run_benchmark(a)
    print_table(results)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
