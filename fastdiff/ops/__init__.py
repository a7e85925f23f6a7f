"""PyTorch-facing fused ops: encoding (forward noising), the denoising step, Langevin updates."""
from .encode import add_noise, add_noise_with_target, encoder_transition, fused_encode
from .langevin import langevin_step, langevin_select
from .step import fused_step, step_coefs

__all__ = ["add_noise", "add_noise_with_target", "encoder_transition", "fused_encode", "fused_step",
           "step_coefs", "langevin_step", "langevin_select"]

import torch as _torch

from .._backend import interpret_mode as _interpret_mode
from .._backend import triton_available as _triton_available

if _triton_available() and (_torch.cuda.is_available() or _interpret_mode()):
    # Where the kernels can run, register torch.ops.fastdiff.* as soon as fastdiff is imported. Elsewhere
    # (CPU, no interpreter) the launchers import on first use: triton_op pulls in torch._inductor (~1.1 s).
    from .encode import fused as _encode_fused  # noqa: F401
    from .langevin import fused as _langevin_fused  # noqa: F401
    from .step import _load_launchers as _load_step_launchers

    _load_step_launchers()  # fused_step reads them from a module global, so traced code never imports
