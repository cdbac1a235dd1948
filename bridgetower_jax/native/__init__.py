"""Native helpers compiled on the host at first use: the large-block cache (`host_memory`) and the CPU
attention kernel (`native.attention`). `build_library` is the one place that compiles them."""
from __future__ import annotations

import hashlib
import os
import pathlib
import platform
import subprocess
import tempfile

SOURCE_DIR = pathlib.Path(__file__).parent


def cache_dir() -> pathlib.Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(root) / "bridgetower_jax"


def cpu_identity() -> str:
    """What code compiled for this host's CPU depends on (-march=native, XLA:CPU): the CPU model and its
    feature flags (Linux), else the processor's name."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor()


def build_library(source: pathlib.Path, *, compiler_env: str, default_compiler: str, flags: list[str],
                  purpose: str, hint: str, libs: tuple[str, ...] = (), key: str = "") -> str:
    """Path of `source` built as a shared library, compiling it (with $compiler_env, default
    `default_compiler`) only if no build of this source, compiler, flags and `key` (e.g. the CPU's
    features, for -march=native) is cached yet. Errors name the purpose, the compiler and a way out."""
    compiler = os.environ.get(compiler_env, default_compiler)
    digest = hashlib.sha256(b"\0".join([source.read_bytes(), compiler.encode(), " ".join([*flags, *libs]).encode(),
                                        key.encode()])).hexdigest()[:16]
    out = cache_dir() / f"{source.stem}-{platform.machine()}-{digest}.so"
    if out.exists():
        return str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Each builder compiles into its own file and renames it complete: concurrent builds cannot
    # install a partial one.
    fd, partial = tempfile.mkstemp(dir=out.parent, prefix=out.name + ".", suffix=".partial")
    os.close(fd)
    cmd = [compiler, *flags, "-shared", "-fPIC", "-o", partial, str(source), *libs]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        os.chmod(partial, 0o755)     # mkstemp made it private; a shared cache must be readable by all
        os.replace(partial, out)
    except FileNotFoundError:
        raise RuntimeError(f"{purpose} needs a compiler to build {source.name}: '{compiler}' was not found "
                           f"({hint})") from None
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"building {source} failed ({' '.join(cmd)}):\n{e.stderr}") from None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return str(out)
