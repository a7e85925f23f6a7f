"""The drop-in classes a compiled whole denoising loop is checked on, shared by
``tests/suites/test_compile_dropins.py`` (which compiles each and compares with eager) and
``benchmarks/compile_loops.py`` (which times the cold compiles beside diffusers'): one table, so the benchmark
covers the classes the test covers.
"""

#: id -> (class name, config); every drop-in class (DPMSolverMultistep, its inverse and EDMDPMSolverMultistep
#: twice: ODE and SDE; the inverse SDE entry is deterministic, see its class docstring)
CLASSES = {
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm_multi": ("DPMSolverMultistepScheduler", {}),
    "dpm_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "flow_euler": ("FlowMatchEulerDiscreteScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "lcm": ("LCMScheduler", {}),
    "tcd": ("TCDScheduler", {}),
    "ddim_inverse": ("DDIMInverseScheduler", {}),
    "ddim_parallel": ("DDIMParallelScheduler", {}),
    "ddpm_parallel": ("DDPMParallelScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
    "dpm_single": ("DPMSolverSinglestepScheduler", {}),
    "ipndm": ("IPNDMScheduler", {}),
    "cm": ("CMStochasticIterativeScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "kdpm2": ("KDPM2DiscreteScheduler", {}),
    "kdpm2_ancestral": ("KDPM2AncestralDiscreteScheduler", {}),
    "edm_euler": ("EDMEulerScheduler", {}),
    "sasolver": ("SASolverScheduler", {}),
    "cogvideox_ddim": ("CogVideoXDDIMScheduler", {}),
    "dpm_multi_inverse": ("DPMSolverMultistepInverseScheduler", {}),
    "dpm_multi_inverse_sde": ("DPMSolverMultistepInverseScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "edm_dpm": ("EDMDPMSolverMultistepScheduler", {}),
    "edm_dpm_sde": ("EDMDPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "flow_heun": ("FlowMatchHeunDiscreteScheduler", {}),
    "dpm_sde_2stage": ("DPMSolverSDEScheduler", {}),
    "cosine_dpm": ("CosineDPMSolverMultistepScheduler", {}),
    "unclip": ("UnCLIPScheduler", {}),
    "flow_map_euler": ("FlowMapEulerDiscreteScheduler", {}),
}
#: exported classes whose loop does not compile fullgraph (or not as required) yet, and why
NOT_COMPILED: dict = {}
#: the entries that draw noise (a run keys it with ``set_noise_seed``, so compiled and eager runs draw alike)
STOCHASTIC = frozenset(("ddpm", "euler_ancestral", "dpm_sde", "lcm", "tcd", "ddpm_parallel", "cm",
                        "kdpm2_ancestral", "sasolver", "edm_dpm_sde", "dpm_sde_2stage", "cosine_dpm", "unclip"))
