"""Builds, finds and loads spinejax's compiled CPU kernels: onednn_conv.cc, oneDNN's 3D convolutions as XLA FFI targets.

XLA:CPU runs 3D convolutions several times slower than oneDNN (README "Training", ../shared/PERF_NOTES.md), so on
CPU spinejax calls oneDNN's convolution primitives through three FFI targets (forward, input gradient, kernel
gradient; spinejax/conv.py gives them a custom VJP). The library is built once per environment:

    python -m spinejax.native.build        # ./run.sh setup runs it

with the C++ compiler ($CXX, else c++), jaxlib's FFI headers and the oneDNN wheels that requirements.txt installs
(onednn-cpu-gomp: libdnnl.so in the environment's lib/; onednn-devel-cpu-gomp: the headers in its include/). Its
file name carries a hash of everything it is made from (this source, jaxlib's version, oneDNN's version header,
the machine), so a changed source or library gives a new build and a stale one is never loaded. It lives in
$SPINEJAX_NATIVE_DIR, else <environment>/lib/spinejax-native. Without it, convolutions fall back to XLA's own
(conv.resolve('auto') picks 'depth_concat').
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from spinejax.errors import InputError

SOURCE = Path(__file__).with_name("onednn_conv.cc")
# FFI target name (as jax.ffi.ffi_call names it) -> the handler's symbol in the library.
TARGETS = {
    "spinejax_onednn_conv3d_forward": "SpinejaxConv3dForward",
    "spinejax_onednn_conv3d_backward_data": "SpinejaxConv3dBackwardData",
    "spinejax_onednn_conv3d_backward_weights": "SpinejaxConv3dBackwardWeights",
}


class NativeUnavailable(InputError):
    """The compiled kernels cannot be built or loaded here (the message says why and what to do, in one line)."""


def onednn_dirs() -> tuple[Path, Path]:
    """(include dir, lib dir) of the oneDNN wheels in this environment."""
    include, lib = Path(sys.prefix) / "include", Path(sys.prefix) / "lib"
    if not (include / "dnnl.hpp").is_file() or not (lib / "libdnnl.so").exists():
        raise NativeUnavailable(f"oneDNN's headers or library are not in {sys.prefix} (pip install "
                                "onednn-cpu-gomp onednn-devel-cpu-gomp, as requirements.txt pins them)")
    return include, lib


def _compile_command(output: Path) -> list[str]:
    """The compiler's command line for onednn_conv.cc -> `output`."""
    import jax

    include, lib = onednn_dirs()
    return [os.environ.get("CXX") or "c++", "-O2", "-std=c++17", "-shared", "-fPIC", "-w",
            f"-I{jax.ffi.include_dir()}", f"-I{include}", str(SOURCE), "-o", str(output), f"-L{lib}", "-ldnnl",
            f"-Wl,-rpath,{lib}"]


def library_path() -> Path:
    """Where the library made from the present source, jaxlib, oneDNN and compile command is (or would be) built."""
    include, _ = onednn_dirs()
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), importlib.metadata.version("jaxlib").encode(),
                 (include / "dnnl_version.h").read_bytes(), platform.machine().encode(),
                 " ".join(_compile_command(Path("OUT"))).encode()):  # flags, include and library paths
        digest.update(hashlib.sha256(part).digest())
    folder = Path(os.environ.get("SPINEJAX_NATIVE_DIR") or Path(sys.prefix) / "lib" / "spinejax-native")
    return folder / f"libspinejax_onednn-{digest.hexdigest()[:16]}.so"


def build() -> tuple[Path, bool]:
    """(library path, whether it was compiled now): compiles onednn_conv.cc unless that build exists.

    Written under a temporary name and renamed, so a killed build leaves no half library behind."""
    path = library_path()
    if path.is_file():
        return path, False
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    command = _compile_command(partial)
    compiler = command[0]
    if shutil.which(compiler) is None:
        raise NativeUnavailable(f"no C++ compiler ({compiler}) to build {SOURCE.name}; set CXX or install g++")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            first = next((line for line in done.stderr.splitlines() if "error" in line), done.stderr.strip()[:200])
            raise NativeUnavailable(f"{compiler} could not build {SOURCE.name}: {first}")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    for older in path.parent.glob("libspinejax_onednn-*.so"):  # earlier builds, spinejax's own files
        if older != path:
            older.unlink(missing_ok=True)
    return path, True


@functools.cache
def load() -> Path:
    """Loads the built library and registers its FFI targets with JAX (once per process); returns its path."""
    import jax

    path = library_path()
    if not path.is_file():
        raise NativeUnavailable(f"spinejax's oneDNN convolution is not built for this environment ({path.name}): "
                                "run python -m spinejax.native.build")
    library = ctypes.CDLL(str(path))
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
    return path


def available() -> bool:
    """True when the library is built for this environment and loads."""
    try:
        load()
    except (NativeUnavailable, OSError):
        return False
    return True
