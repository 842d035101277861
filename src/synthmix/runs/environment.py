"""Where a run ran, as MLflow sees it: the device, precisions, GPU name and library versions of
`Compute.record()` as run parameters, and MLflow's system metrics (GPU utilisation and memory) for a
stage on CUDA. A CPU stage logs no system metrics, as before there was a device setting."""

from __future__ import annotations

from collections.abc import Mapping

from synthmix.config.compute import Compute

# Compute.record()'s keys logged under their own names; the rest are library versions (version.<library>)
_SETTINGS = ("device", "dtype", "diffusion_dtype", "gpu", "together")


def environment_params(record: Mapping[str, str]) -> dict[str, str]:
    """A run's `environment` record (Compute.record()) as MLflow parameters: device, dtype,
    diffusion_dtype, gpu, version.torch, version.diffusers..."""
    return {key if key in _SETTINGS else f"version.{key}": value for key, value in record.items()}


def watch_system(compute: Compute) -> None:
    """On CUDA, MLflow's system metrics for every run this process starts from now on (GPU utilisation
    and memory through pynvml, from the nvidia-ml-py dependency). Nothing on the CPU."""
    if compute.is_cuda:
        import mlflow

        mlflow.enable_system_metrics_logging()
