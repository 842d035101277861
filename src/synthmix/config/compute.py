"""compute.*: where the networks run and in what precision, and `Compute`, that setting resolved once
against this machine (at the edge: the CLI, or a stage called directly) and handed down typed.

`auto` takes CUDA when torch sees a GPU, else the CPU. On the CPU `auto` precision is float32, exactly
the path every CPU result was made on (no autocast, no other op), so those results stay byte-identical.
On CUDA it is bfloat16 autocast for training's forward passes (weights, loss and optimiser state stay
float32) and float16 weights for Stable Diffusion, with TF32 matmuls and convolutions.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from synthmix.config.types import Section, _require
from synthmix.core.errors import UserError

if TYPE_CHECKING:
    import torch

DEVICE_FORMAT = re.compile(r"auto|cpu|cuda(:\d+)?")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# the libraries whose versions a run records, where installed
LIBRARIES = ("torch", "torchvision", "diffusers", "transformers", "timm", "accelerate")

_FIX = "Set compute.device: auto (the GPU when there is one, else the CPU) or cpu in params.yaml."


class ComputeConfig(Section):
    # auto: CUDA when torch sees a GPU, else the CPU; cpu; cuda (the current GPU); cuda:N (GPU N)
    device: Annotated[
        str,
        _require(
            lambda v: DEVICE_FORMAT.fullmatch(v) is not None,
            "write auto, cpu, cuda or cuda:N (N a GPU's index, e.g. cuda:0).",
        ),
    ] = "auto"
    # auto: float32 on the CPU; on CUDA bfloat16 autocast for training and float16 Stable Diffusion.
    # float32 | bfloat16 | float16: that precision everywhere (float16 only on CUDA)
    dtype: Literal[DTYPES] = "auto"


@dataclass(frozen=True)
class Compute:
    """compute.* resolved: the device every network runs on and the precision it computes in."""

    device: torch.device
    dtype: torch.dtype  # training's forward passes: float32 (no autocast) or the autocast dtype
    diffusion_dtype: torch.dtype  # Stable Diffusion's weights and activations
    gpu: str  # the GPU's name, or "cpu"

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def is_default_cpu(self) -> bool:
        """The CPU in float32: the path every CPU result so far was made on."""
        import torch

        return self.device.type == "cpu" and self.dtype == torch.float32

    @property
    def identity(self) -> dict[str, str] | None:
        """What a result's identity adds for this device (a run on CUDA, or in bfloat16, is another
        result than one on the CPU in float32); None on the CPU in float32, whose identities stay as they
        were before there was a device setting. The device's kind, not its index or the GPU's model: a
        run moved to another GPU is not redone (the run records which GPU it ran on)."""
        if self.is_default_cpu:
            return None
        return {
            "device": self.device.type,
            "dtype": _name(self.dtype),
            "diffusion_dtype": _name(self.diffusion_dtype),
        }

    def autocast(self) -> AbstractContextManager[Any]:
        """Mixed precision for a forward pass: none in float32, else torch.autocast in `dtype`."""
        import torch

        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def enable_fast_kernels(self) -> None:
        """TF32 matmuls and convolutions on CUDA (a process-wide switch; nothing on the CPU)."""
        if self.is_cuda:
            import torch

            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def describe(self) -> str:
        """In words, e.g. 'cpu in float32' or 'cuda:0 (NVIDIA H100) in bfloat16'."""
        where = f"{self.device} ({self.gpu})" if self.is_cuda else str(self.device)
        return f"{where} in {_name(self.dtype)}"

    def record(self) -> dict[str, str]:
        """What a run records of where it ran: device, precisions, GPU name ("cpu") and library versions."""
        return {
            "device": str(self.device),
            "dtype": _name(self.dtype),
            "diffusion_dtype": _name(self.diffusion_dtype),
            "gpu": self.gpu,
            **library_versions(),
        }


def cpu_compute() -> Compute:
    """The CPU in float32: what a piece called without a `Compute` runs on (tests, benches)."""
    import torch

    return Compute(torch.device("cpu"), torch.float32, torch.float32, "cpu")


def library_versions() -> dict[str, str]:
    """{library: version} of LIBRARIES, those installed."""
    versions = {}
    for library in LIBRARIES:
        try:
            versions[library] = importlib.metadata.version(library)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def resolve_compute(cfg: ComputeConfig, cuda_available: Callable[[], bool] | None = None) -> Compute:
    """compute.* against this machine; a GPU asked for and not there (or a precision it cannot run) is a
    UserError naming the setting. `cuda_available` stands in for torch.cuda.is_available (tests)."""
    import torch

    available = (cuda_available or torch.cuda.is_available)()
    if cfg.device == "auto":
        device = torch.device("cuda", torch.cuda.current_device()) if available else torch.device("cpu")
    elif cfg.device == "cpu":
        device = torch.device("cpu")
    else:
        device = _cuda_device(cfg.device, available)
    cuda = device.type == "cuda"
    if cfg.dtype == "float16" and not cuda:
        raise UserError(
            f"compute.dtype in params.yaml is float16, but the networks run on the CPU (compute.device: "
            f"{cfg.device}), where float16 is not supported. Set compute.dtype: auto (float32 on the CPU), "
            "float32 or bfloat16."
        )
    if cfg.dtype == "auto":
        dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
        diffusion = torch.float16 if cuda else torch.float32
    else:
        dtype = diffusion = getattr(torch, cfg.dtype)
    gpu = torch.cuda.get_device_name(device) if cuda else "cpu"
    return Compute(device, dtype, diffusion, gpu)


def _cuda_device(value: str, available: bool) -> torch.device:
    import torch

    if not available:
        raise UserError(
            f"compute.device in params.yaml is {value}, but torch finds no CUDA GPU on this machine "
            f"(torch.cuda.is_available() is False; torch {torch.__version__}, built for CUDA "
            f"{torch.version.cuda or 'none: a CPU-only build'}). {_FIX} Or run on a machine with a GPU and "
            "a CUDA build of torch."
        )
    count = torch.cuda.device_count()
    index = int(value.split(":")[1]) if ":" in value else torch.cuda.current_device()
    if index >= count:
        raise UserError(
            f"compute.device in params.yaml is {value}, but this machine has {count} CUDA GPU(s), "
            f"numbered 0 to {count - 1}. Set compute.device to one of cuda:0 to cuda:{count - 1}, or cuda "
            f"(the current one). {_FIX}"
        )
    return torch.device("cuda", index)
