"""PyTorch-facing fused ops: encoding (forward noising), the denoising step, Langevin updates."""
from .encode import add_noise, add_noise_with_target, encoder_transition, fused_encode
from .langevin import langevin_step, langevin_select
from .step import fused_step, step_coefs

__all__ = ["add_noise", "add_noise_with_target", "encoder_transition", "fused_encode", "fused_step",
           "step_coefs", "langevin_step", "langevin_select"]
