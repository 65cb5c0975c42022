"""midilm's CPU kernels: a sampled token's whole GPT-2 forward in one call, on AVX-512 CPUs.

Why (2-core AMD EPYC, the ``mmm-gpt2`` shape; ``benchmarks/generate.py`` prints the
figures, beside the same engine on PyTorch's kernels): sampling a token reads every weight
once, so its floor is the bytes read over the memory bandwidth. On PyTorch the token is
~150 small tensor operations whose overhead weighs as much as the arithmetic, its fp16
matrix-vector kernel reads ~0.6 of the bandwidth and its attention spends ~50 µs a layer
on one query. :file:`cpu_kernels.c` runs every block, the final norm and the head in one
OpenMP region: each fp16 weight row read once front to back (~0.95 of the measured
bandwidth), attention over an fp16 cache read once, for 2-8 rows (candidates sampled
together) the CPU's bf16 dot-product instruction on weights packed so that one pass
serves every row. Measured: the forward 2.2× faster for one row, 2.6× for eight.

They are compiled once per machine with the system C compiler (``-march=native``) into
``$MIDILM_CACHE_DIR/kernels`` (default ``~/.cache/midilm/kernels``), run on PyTorch's own
OpenMP threads, and checked against PyTorch before use. Where anything is missing (not
x86-64 Linux with AVX-512, no compiler, PyTorch without GNU OpenMP, heads that are not
whole 16-float vectors, a failed check) :func:`load` returns ``None`` and the engine uses
PyTorch's kernels; ``MIDILM_CPU_KERNELS=0`` says so outright.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from functools import cache
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["BlockParams", "CpuKernels", "Decoder", "fits", "load"]

log = logging.getLogger(__name__)

Linear = Callable[[torch.Tensor], torch.Tensor]

#: Rows one pass over the bf16 weights serves (``ROW_BLOCK`` in cpu_kernels.c: registers
#: hold two accumulators a row); more rows take more passes. The checks cross it.
MAX_BF16_ROWS = 8

_SOURCE = "cpu_kernels.c"
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]
_LIBS = ["-lmvec", "-lm"]  # glibc's vector expf/tanhf for the softmax and the GELU

_p, _i, _l = ctypes.c_void_p, ctypes.c_int, ctypes.c_long


class CpuKernels:
    """The compiled kernels. Tensors passed in are CPU, contiguous where said; results
    are new float32 tensors."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._linear = library.midilm_linear
        self._linear.argtypes = [_p, _l, _l, _p, _i, _l, _p, _p, _i, _i]
        self._linear.restype = _i
        self._forward = library.midilm_forward
        self._forward.argtypes = [
            _p, _l, _l, _l, _l, _p, _p, _p, _p, _l, _i, _p, _l, _l, ctypes.c_float, _p, _p, _i,
        ]  # fmt: skip
        self._forward.restype = _i
        self._workspace = library.midilm_forward_workspace
        self._workspace.argtypes = [_l, _l, _l, _i]
        self._workspace.restype = _l
        library.midilm_has_bf16.restype = _i
        self.dtypes = (torch.float16, torch.bfloat16) if library.midilm_has_bf16() else (
            torch.float16,
        )  # fmt: skip

    def linear(self, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool = False) -> Linear:
        """``x ↦ x @ weight.T + bias`` (GELU-tanh after, if asked) for float32 ``x`` of
        shape ``(..., in)``, ``weight`` ``(out, in)`` fp16 or bf16: the decoder's matrix
        product on its own (the benchmark's matrices-alone figure, the tests)."""
        if weight.dtype not in self.dtypes or weight.dim() != 2:
            raise ValueError(f"no CPU kernel for a {weight.dtype} weight of {tuple(weight.shape)}")
        out_features, in_features = weight.shape
        bias = None if bias is None else bias.float().contiguous()
        is_bf16 = int(weight.dtype == torch.bfloat16)
        weight = _pack_bf16(weight) if is_bf16 else weight.contiguous()
        w_ptr, b_ptr = weight.data_ptr(), None if bias is None else bias.data_ptr()
        run, want_gelu = self._linear, int(gelu)

        def product(x: torch.Tensor) -> torch.Tensor:
            rows = x.numel() // in_features
            x = x.float().contiguous()
            y = torch.empty(*x.shape[:-1], out_features)
            code = run(
                x.data_ptr(), rows, in_features, w_ptr, is_bf16, out_features, b_ptr,
                y.data_ptr(), want_gelu, torch.get_num_threads(),
            )  # fmt: skip
            if code:
                raise RuntimeError("midilm's CPU linear kernel failed (out of memory?)")
            return y

        product.keep = (weight, bias)  # type: ignore[attr-defined]  # the kernel reads them
        return product

    def decoder(
        self,
        blocks: Sequence[BlockParams],
        ln_f: tuple[torch.Tensor, torch.Tensor],
        head: torch.Tensor,
        bf16: bool,
    ) -> Decoder:
        """The whole GPT-2 for one new position per row (see :class:`Decoder`)."""
        return Decoder(self._forward, self._workspace, blocks, ln_f, head, bf16)


@dataclass(frozen=True)
class BlockParams:
    """A pre-norm GPT-2 block: norms and biases float32, matrices ``(out, in)`` in the
    kernels' dtype (q/k/v fused, as GPT-2 stores them)."""

    ln_1_w: torch.Tensor
    ln_1_b: torch.Tensor
    ln_2_w: torch.Tensor
    ln_2_b: torch.Tensor
    qkv_w: torch.Tensor
    proj_w: torch.Tensor
    fc_w: torch.Tensor
    out_w: torch.Tensor
    qkv_b: torch.Tensor
    proj_b: torch.Tensor
    fc_b: torch.Tensor
    out_b: torch.Tensor


class _BlockStruct(ctypes.Structure):
    """``Block`` in cpu_kernels.c: a pointer per field of :class:`BlockParams`, in order."""

    _fields_ = [(f.name, _p) for f in fields(BlockParams)]


class Decoder:
    """``decoder(x, kv, position, eps) → logits``: the embedded new position of each row,
    ``x`` ``(B, C)`` float32 (consumed: it holds the residual stream after), through every
    block, the final norm and the head (no bias), in one call; the cache ``kv`` ``(layers,
    B, H, 2, max_len, D)``, fp16 contiguous (half the bytes attention reads, the cache's
    weight with several rows), receives the position's keys and values. Matrices fp16
    (``bf16=False``) or bf16; the tensors it reads are kept here, bf16 matrices packed."""

    def __init__(
        self,
        forward: Callable[..., int],
        workspace: Callable[..., int],
        blocks: Sequence[BlockParams],
        ln_f: tuple[torch.Tensor, torch.Tensor],
        head: torch.Tensor,
        bf16: bool,
    ) -> None:
        matrix_dtype = torch.bfloat16 if bf16 else torch.float16
        self.blocks: list[dict[str, torch.Tensor]] = []
        for params in blocks:
            tensors = {f.name: getattr(params, f.name) for f in fields(params)}
            for name, tensor in tensors.items():
                want = matrix_dtype if tensor.dim() == 2 else torch.float32
                if tensor.dtype != want:
                    raise ValueError(f"{name}: {tensor.dtype} {tuple(tensor.shape)}, want {want}")
                tensors[name] = _pack_bf16(tensor) if bf16 and tensor.dim() == 2 else (
                    tensor.contiguous()
                )  # fmt: skip
            self.blocks.append(tensors)
        if head.dtype != matrix_dtype or any(t.dtype != torch.float32 for t in ln_f):
            raise ValueError("the head must be in the matrices' dtype, the final norm float32")
        self.ln_f = tuple(t.contiguous() for t in ln_f)
        self.head = _pack_bf16(head) if bf16 else head.contiguous()
        self.vocab = head.shape[0]
        structs = (_BlockStruct * len(self.blocks))()
        for struct, tensors in zip(structs, self.blocks, strict=True):
            for name, tensor in tensors.items():
                setattr(struct, name, tensor.data_ptr())
        self._structs = structs
        self._forward, self._workspace_size = forward, workspace
        self._bf16 = int(bf16)
        self._local = threading.local()  # a workspace per thread: server workers share models

    def __call__(
        self, x: torch.Tensor, kv: torch.Tensor, position: int, eps: float
    ) -> torch.Tensor:
        batch, width = x.shape
        layers, heads, max_len = kv.shape[0], kv.shape[2], kv.shape[4]
        if layers != len(self.blocks) or kv.shape[1] != batch or kv.dtype != torch.float16:
            raise ValueError(f"an fp16 cache of {len(self.blocks)} layers and {batch} rows")
        if not (x.is_contiguous() and kv.is_contiguous() and x.dtype == torch.float32):
            raise ValueError("x (B, C) float32 and the cache must be contiguous")
        threads = torch.get_num_threads()
        key, local = (batch, width, max_len, threads), self._local
        if getattr(local, "key", None) != key:  # kept: a new one per token costs page faults
            local.workspace = torch.empty(self._workspace_size(batch, width, max_len, threads))
            local.key = key
        logits = torch.empty(batch, self.vocab)
        code = self._forward(
            x.data_ptr(), batch, width, heads, layers, self._structs, self.ln_f[0].data_ptr(),
            self.ln_f[1].data_ptr(), self.head.data_ptr(), self.vocab, self._bf16,
            kv.data_ptr(), max_len, position, eps, logits.data_ptr(),
            local.workspace.data_ptr(), threads,
        )  # fmt: skip
        if code:
            raise ValueError(f"no CPU kernel for heads of {width // heads} (see fits())")
        return logits


def fits(head_dim: int) -> bool:
    """Whether the kernels take heads of this size (whole 16-float vectors)."""
    return head_dim % 16 == 0 and 0 < head_dim <= 256


@cache
def load() -> CpuKernels | None:
    """The kernels, compiled and checked on first call; ``None`` where they cannot be
    used here (the reason is logged at debug level)."""
    reason = _unsupported()
    if reason is None:
        try:
            kernels = CpuKernels(ctypes.CDLL(str(_build())))
            reason = _check(kernels)
        except (OSError, subprocess.SubprocessError, RuntimeError, ValueError) as err:
            reason = f"could not build or load them: {err}"
    if reason is not None:
        log.debug("CPU kernels not used: %s", reason)
        return None
    return kernels


def _unsupported() -> str | None:
    if os.environ.get("MIDILM_CPU_KERNELS", "1").strip().lower() in ("0", "false", "no", "off"):
        return "MIDILM_CPU_KERNELS says not to"
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"built for x86-64 Linux only, this is {platform.system()} {platform.machine()}"
    capabilities = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    missing = [f for f in ("avx512_f", "avx512_bw", "avx512_vl", "f16c") if not capabilities.get(f)]
    if missing:
        return f"the CPU lacks {', '.join(missing)}"
    if not torch.backends.openmp.is_available() or not _torch_uses_gnu_openmp():
        return "PyTorch does not run on GNU OpenMP (two thread pools would fight)"
    if _compiler() is None:
        return "no C compiler (cc or gcc, or $CC)"
    return None


def _torch_uses_gnu_openmp() -> bool:
    """Whether the process already maps libgomp (PyTorch's): the kernels' ``libgomp.so.1``
    then resolves to it, so their threads are PyTorch's."""
    try:
        return "libgomp" in Path("/proc/self/maps").read_text()
    except OSError:
        return False


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _cache_dir() -> Path:
    if os.environ.get("MIDILM_CACHE_DIR"):
        return Path(os.environ["MIDILM_CACHE_DIR"]) / "kernels"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "midilm" / "kernels"


def _build() -> Path:
    """The shared library for this source, compiler and CPU, compiled if not cached (into
    a temporary name, then renamed: concurrent first uses never load half a file)."""
    source = resources.files("midilm.sampling").joinpath(_SOURCE).read_bytes()
    compiler = _compiler() or "cc"
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.splitlines()[:1]
    key = hashlib.sha256(
        b"\0".join(
            [source, " ".join([compiler, *_FLAGS, *_LIBS, *version]).encode(), _cpu_id().encode()]
        )
    ).hexdigest()[:16]
    target = _cache_dir() / f"cpu_kernels-{key}.so"
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        folder = target.parent
    except OSError:  # a read-only home: build for this process only
        folder = Path(tempfile.mkdtemp(prefix="midilm-kernels-"))
        target = folder / target.name
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        c_file = Path(scratch) / _SOURCE
        c_file.write_bytes(source)
        built = Path(scratch) / target.name
        result = subprocess.run(
            [compiler, *_FLAGS, str(c_file), "-o", str(built), *_LIBS],
            check=False, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {result.stderr.strip()[-500:]}")
        built.replace(target)
    return target


def _cpu_id() -> str:
    """What ``-march=native`` depends on: the CPU's model and flags."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    lines = [line for line in info.splitlines() if line.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(lines)))


def _pack_bf16(weight: torch.Tensor) -> torch.Tensor:
    """``(out, in)`` as the bf16 kernel reads it: blocks of 32 outputs, each input pair
    side by side, ``(ceil(out / 32), ceil(in / 2), 32, 2)``, zero-padded."""
    out_features, in_features = weight.shape
    padded = F.pad(weight, (0, in_features % 2, 0, -out_features % 32))
    return padded.view(-1, 32, (in_features + 1) // 2, 2).transpose(1, 2).contiguous()


def _check(kernels: CpuKernels) -> str | None:
    """Compare every kernel with PyTorch on awkward shapes (widths that are not whole
    vector blocks, more rows than one bf16 pass); a reason if any differs."""
    generator = torch.Generator().manual_seed(0)

    def randn(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).div(4).to(dtype)

    with torch.inference_mode():
        for dtype in kernels.dtypes:
            for rows, k, n in ((1, 72, 37), (3, 200, 19), (MAX_BF16_ROWS + 1, 64, 40)):
                weight, bias, x = randn(n, k, dtype=dtype), randn(n), randn(rows, k)
                want = F.gelu(_product(x, weight, bias), approximate="tanh")
                if not torch.allclose(kernels.linear(weight, bias, gelu=True)(x), want, atol=1e-3):
                    return f"the {dtype} linear kernel differs from PyTorch's"
            for batch, heads, position in ((1, 3, 0), (MAX_BF16_ROWS + 1, 2, 6)):
                width, max_len, layers, vocab = 16 * heads, 8, 2, 37
                blocks = [
                    BlockParams(
                        *(randn(width) for _ in range(4)),
                        randn(3 * width, width, dtype=dtype),
                        randn(width, width, dtype=dtype),
                        randn(4 * width, width, dtype=dtype),
                        randn(width, 4 * width, dtype=dtype),
                        randn(3 * width),
                        randn(width),
                        randn(4 * width),
                        randn(width),
                    )
                    for _ in range(layers)
                ]
                ln_f, head = (randn(width), randn(width)), randn(vocab, width, dtype=dtype)
                x = randn(batch, width)
                kv = randn(layers, batch, heads, 2, max_len, 16, dtype=torch.float16)
                want_x, want_kv = x.clone(), kv.clone()
                for params, layer_kv in zip(blocks, want_kv, strict=True):
                    _reference_block(want_x, layer_kv, position, params)
                normed = F.layer_norm(want_x, (width,), *ln_f, 1e-5)
                want = _product(normed, head, None)
                decoder = kernels.decoder(blocks, ln_f, head, bf16=dtype == torch.bfloat16)
                got = decoder(x, kv, position, 1e-5)
                close = torch.allclose(got, want, atol=1e-3) and torch.allclose(
                    x, want_x, atol=1e-3
                )
                if not (close and torch.allclose(kv, want_kv, atol=1e-4)):
                    return f"the {dtype} model kernel differs from PyTorch's"
    return None


def _product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """What the kernels compute: fp16 weights against float32 rows, bf16 against bf16."""
    if weight.dtype == torch.bfloat16:
        x = x.bfloat16().float()
    return F.linear(x, weight.float(), bias)


def _reference_block(x: torch.Tensor, kv: torch.Tensor, position: int, p: BlockParams) -> None:
    batch, width = x.shape
    heads, head_dim = kv.shape[1], kv.shape[-1]
    h = F.layer_norm(x, (width,), p.ln_1_w, p.ln_1_b, 1e-5)
    q, k, v = _product(h, p.qkv_w, p.qkv_b).view(batch, 3, heads, head_dim).unbind(1)
    kv[:, :, 0, position], kv[:, :, 1, position] = k, v
    past = kv[:, :, :, : position + 1].float()
    attention = F.scaled_dot_product_attention(q[:, :, None], past[:, :, 0], past[:, :, 1])
    x += _product(attention.reshape(batch, width), p.proj_w, p.proj_b)
    h = F.layer_norm(x, (width,), p.ln_2_w, p.ln_2_b, 1e-5)
    x += _product(F.gelu(_product(h, p.fc_w, p.fc_b), approximate="tanh"), p.out_w, p.out_b)
