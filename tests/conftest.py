"""Test-wide set-up: 8 simulated CPU devices and the `slow` marker.

XLA_FLAGS must be set before jax is imported anywhere, which is why it lives at the top
of the root conftest (pytest imports it before any test module).
"""
import os

# 8 simulated devices; tests compile far more than they compute, so XLA's CPU backend is asked
# for quick compiles rather than fast code (same numerics).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0 "
                                   "--xla_llvm_disable_expensive_passes=true")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Test-speed settings, no effect on what is tested: (1) the "rbg" PRNG instead of threefry -- on
# CPU, XLA takes minutes to compile the threefry hash behind every dropout mask of a train step,
# and rbg is, like threefry, identical across shardings; (2) a persistent compilation cache, so
# programs compiled again within a run (resume tests, repeated configs) load instead.
os.environ.setdefault("JAX_DEFAULT_PRNG_IMPL", "rbg")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                   ".pytest_cache", "jax_compilation"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

import pytest  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run tests marked @pytest.mark.slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test, run with --runslow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow test: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """(data_dir, tokenizer_dir) of a small demo corpus with every task's dataset built."""
    from train_fixtures import build_demo_data
    return build_demo_data(str(tmp_path_factory.mktemp("demo_data")))


@pytest.fixture(scope="session")
def reference_runs(demo_data, tmp_path_factory):
    """Pre-training runs shared by the sharding, resume and multi-host tests (see train_fixtures)."""
    from train_fixtures import ReferenceRuns
    return ReferenceRuns(*demo_data, str(tmp_path_factory.mktemp("reference_runs")))
