"""Drop-in replacements for diffusers' schedulers: same names, config keys, defaults and numbers,
but every ``step`` is one fused pass with no host-device sync.

Change one import::

    from fastdiff.diffusers import DPMSolverMultistepScheduler
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)

diffusers is optional (``pip install fastdiff[compat]``): when installed, the
classes subclass its ``SchedulerMixin``/``ConfigMixin`` and return its output
types; without it, small stand-ins provide ``config``, ``from_config``,
``save_pretrained``/``from_pretrained`` and the output dataclasses.

Example:
    >>> import torch
    >>> from fastdiff.diffusers import DDIMScheduler
    >>> s = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    >>> s.set_timesteps(10)
    >>> x = torch.randn(1, 4, 8, 8)
    >>> for t in s.timesteps:
    ...     x = s.step(torch.zeros_like(x), t, x).prev_sample
"""
from ._base import ZTSNR_ALPHA_BAR, FusedSchedulerBase, set_table_arithmetic
from ._cogvideox import CogVideoXDDIMScheduler, CogVideoXDPMScheduler
from ._compat import HAS_DIFFUSERS
from ._consistency import CMStochasticIterativeScheduler
from ._cosine import CosineDPMSolverMultistepScheduler
from ._ddim import DDIMInverseScheduler, DDIMScheduler, DDPMScheduler
from ._edm import EDMDPMSolverMultistepScheduler, EDMEulerScheduler
from ._euler import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler
from ._flow import FlowMapEulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler
from ._ipndm import IPNDMScheduler
from ._kdpm2 import KDPM2AncestralDiscreteScheduler, KDPM2DiscreteScheduler
from ._lcm import LCMScheduler, TCDScheduler
from ._lms import LMSDiscreteScheduler
from ._multistep import DPMSolverMultistepScheduler, UniPCMultistepScheduler
from ._multistep_more import DEISMultistepScheduler, DPMSolverMultistepInverseScheduler, DPMSolverSinglestepScheduler
from ._parallel import DDIMParallelScheduler, DDPMParallelScheduler
from ._pndm import PNDMScheduler
from ._sasolver import SASolverScheduler
from ._sde import DPMSolverSDEScheduler
from ._sde_ve import ScoreSdeVeScheduler
from ._unclip import UnCLIPScheduler
from ._wuerstchen import DDPMWuerstchenScheduler

__all__ = [
    "DDPMScheduler", "DDIMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler",
    "FlowMatchEulerDiscreteScheduler", "FusedSchedulerBase", "HAS_DIFFUSERS", "ZTSNR_ALPHA_BAR",
    "set_table_arithmetic", "PNDMScheduler", "LCMScheduler", "TCDScheduler",
    "DDIMInverseScheduler", "DDIMParallelScheduler", "DDPMParallelScheduler", "DEISMultistepScheduler",
    "DPMSolverSinglestepScheduler", "DPMSolverMultistepInverseScheduler", "IPNDMScheduler",
    "CMStochasticIterativeScheduler", "FlowMatchHeunDiscreteScheduler", "ScoreSdeVeScheduler",
    "UnCLIPScheduler", "FlowMapEulerDiscreteScheduler",
    "LMSDiscreteScheduler", "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler", "EDMEulerScheduler",
    "EDMDPMSolverMultistepScheduler",
    "DPMSolverSDEScheduler", "SASolverScheduler", "CogVideoXDDIMScheduler", "CogVideoXDPMScheduler",
    "DDPMWuerstchenScheduler", "CosineDPMSolverMultistepScheduler",
]
