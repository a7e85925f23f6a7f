"""PyTorch-facing fused ops: encoding (forward noising), the denoising step, Langevin and underdamped Langevin
updates, HMC leapfrog passes."""
from .encode import add_noise, add_noise_with_target, encoder_transition, fused_encode
from .hmc import hmc_leapfrog, hmc_refresh
from .langevin import langevin_step, langevin_select
from .step import fused_step, step_coefs
from .underdamped import underdamped_step

__all__ = ["add_noise", "add_noise_with_target", "encoder_transition", "fused_encode", "fused_step",
           "step_coefs", "langevin_step", "langevin_select", "underdamped_step", "hmc_refresh", "hmc_leapfrog"]

import torch as _torch

from .backend import interpret_mode as _interpret_mode
from .backend import triton_available as _triton_available
from .dispatch import load_launchers as _load_launchers

if _triton_available() and (_torch.cuda.is_available() or _interpret_mode()):
    # Where the kernels can run, register torch.ops.fastdiff.* as soon as fastdiff is imported, so traced code
    # never imports. Elsewhere (CPU, no interpreter) they load on first use: triton_op pulls in torch._inductor.
    _load_launchers()
