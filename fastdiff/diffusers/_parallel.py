"""DDIMParallelScheduler and DDPMParallelScheduler: DDIM / DDPM plus ``batch_step_no_noise``, which advances a
batch whose samples sit at different timesteps (parallel sampling, Shih et al. 2023, "Parallel Sampling of
Diffusion Models" / ParaDiGMS) in one fused pass.

``batch_step_no_noise`` uses a table with one row per training timestep (built once per ``set_timesteps``, moved
to the device once) and hands the timesteps to ``fused_step`` as its per-sample ``coef_index``: each sample reads
its own row inside the kernel, so the step is one launch, whatever the mix of timesteps, and nothing is read back
to the host. ``step`` is DDIM's / DDPM's.
"""
from __future__ import annotations

import torch

from ._base import result_dtype
from ._ddim import _LEARNED, DDIMScheduler, DDPMScheduler, ddim_rows

__all__ = ["DDIMParallelScheduler", "DDPMParallelScheduler"]


def _per_sample_index(timesteps, sample: torch.Tensor, num_train_timesteps: int) -> torch.Tensor:
    """The timesteps as the int64 (batch,) row index of the per-timestep table, on the sample's device."""
    if not isinstance(timesteps, torch.Tensor):
        raise TypeError(f"timesteps must be an integer tensor with one timestep per sample, got "
                        f"{type(timesteps).__name__}")
    if timesteps.dtype.is_floating_point or timesteps.dtype.is_complex or timesteps.dtype == torch.bool:
        raise TypeError(f"timesteps must be an integer tensor, got {timesteps.dtype}")
    batch = sample.shape[0]
    if timesteps.numel() != batch:
        raise ValueError(f"timesteps must hold one timestep per sample ({batch}), got {timesteps.numel()}")
    index = timesteps.reshape(batch).to(device=sample.device, dtype=torch.int64)
    if index.is_cpu and (int(index.min()) < 0 or int(index.max()) >= num_train_timesteps):
        raise ValueError(f"timesteps must lie in [0, {num_train_timesteps}) (num_train_timesteps), got "
                         f"[{int(index.min())}, {int(index.max())}]")
    return index


class _BatchStep:
    """``_batch`` for the parallel schedulers: one fused launch with a per-sample row of a per-timestep table."""

    def _batch(self, model_output: torch.Tensor, timesteps, sample: torch.Tensor, key) -> torch.Tensor:
        index = _per_sample_index(timesteps, sample, self.config.num_train_timesteps)
        table = self._table(key, sample.device)
        dtype = result_dtype(sample, model_output)
        prev, _ = self._launch(sample, model_output, table, 0, out_dtype=dtype, coef_index=index, clip=self._clip())
        return prev


class DDIMParallelScheduler(_BatchStep, DDIMScheduler):
    """``DDIMScheduler`` with ``batch_step_no_noise`` (samples at different timesteps, one fused pass).

    Same config keys, defaults and numbers as ``diffusers.DDIMParallelScheduler``.

    Example:
        >>> s = DDIMParallelScheduler()
        >>> s.set_timesteps(10)
        >>> x = torch.randn(3, 2, 4, 4)
        >>> prev = s.batch_step_no_noise(torch.zeros_like(x), s.timesteps[[0, 4, 9]], x)
        >>> prev.shape
        torch.Size([3, 2, 4, 4])
    """

    _output_name = "DDIMParallelSchedulerOutput"
    _is_ode_scheduler = True

    def _build_table(self, key) -> torch.Tensor:
        if key[0] != "batch":
            return super()._build_table(key)
        T = self.config.num_train_timesteps
        t = torch.arange(T).numpy()
        prev = t - T // self.num_inference_steps
        abar = self._abar64
        a_p = abar[prev.clip(0, T - 1)]
        a_p[prev < 0] = 1.0  # (diffusers' batch step takes alpha_bar 1 below 0, not final_alpha_cumprod)
        return ddim_rows(self.config.prediction_type, abar[t], a_p, key[1], key[2])

    def batch_step_no_noise(self, model_output: torch.Tensor, timesteps: torch.Tensor, sample: torch.Tensor,
                            eta: float = 0.0, use_clipped_model_output: bool = False) -> torch.Tensor:
        """Deterministic DDIM steps of a batch whose sample k is at ``timesteps[k]`` (one fused pass, no sync)."""
        if self.num_inference_steps is None:
            raise ValueError("Number of inference steps is 'None', you need to run 'set_timesteps' after creating "
                             "the scheduler")
        if eta != 0.0:
            raise ValueError(f"batch_step_no_noise takes no noise: eta must be 0.0, got {eta}")
        return self._batch(model_output, timesteps, sample, ("batch", 0.0, bool(use_clipped_model_output)))


class DDPMParallelScheduler(_BatchStep, DDPMScheduler):
    """``DDPMScheduler`` with ``batch_step_no_noise`` (posterior means of samples at different timesteps, one
    fused pass).

    Same config keys, defaults and numbers as ``diffusers.DDPMParallelScheduler``.

    Example:
        >>> s = DDPMParallelScheduler()
        >>> s.set_timesteps(10)
        >>> x = torch.randn(3, 2, 4, 4)
        >>> prev = s.batch_step_no_noise(torch.zeros_like(x), s.timesteps[[0, 4, 9]], x)
        >>> prev.shape
        torch.Size([3, 2, 4, 4])
    """

    _output_name = "DDPMParallelSchedulerOutput"
    _is_ode_scheduler = False

    def _build_table(self, key) -> torch.Tensor:
        if key[0] != "batch":
            return super()._build_table(key)
        T = self.config.num_train_timesteps
        t = torch.arange(T).numpy()
        # diffusers' batch step: the previous timestep is t - T // n (n = T before set_timesteps), not the schedule's
        return self._rows_between(t, t - T // key[1])

    def batch_step_no_noise(self, model_output: torch.Tensor, timesteps: torch.Tensor,
                            sample: torch.Tensor) -> torch.Tensor:
        """The posterior means of a batch whose sample k is at ``timesteps[k]`` (one fused pass, no sync)."""
        if self.variance_type in _LEARNED and model_output.shape[1] == sample.shape[1] * 2:
            model_output = torch.split(model_output, sample.shape[1], dim=1)[0]
        n = self.num_inference_steps or self.config.num_train_timesteps
        return self._batch(model_output, timesteps, sample, ("batch", n))
