"""The drop-in classes a compiled whole denoising loop is checked on, shared by
``tests/suites/test_compile_dropins.py`` (which compiles each and compares with eager) and
``benchmarks/compile_loops.py`` (which times the cold compiles beside diffusers'): one table, so the benchmark
covers the classes the test covers.
"""

#: id -> (class name, config); every drop-in class (DPMSolverMultistep and EDMDPMSolverMultistep twice: ODE
#: and SDE)
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
    "edm_dpm": ("EDMDPMSolverMultistepScheduler", {}),
    "edm_dpm_sde": ("EDMDPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "flow_heun": ("FlowMatchHeunDiscreteScheduler", {}),
}
#: exported classes whose loop does not compile fullgraph (or not as required) yet, and why
NOT_COMPILED = {
    "UnCLIPScheduler": "data-dependent guard in step (a float read of a tensor)",
    "FlowMapEulerDiscreteScheduler": "step reads the timestep's value on the host (its off-schedule jump)",
    "DPMSolverSDEScheduler": "the Brownian-tree noise (torchsde) is host code dynamo cannot trace",
    "CosineDPMSolverMultistepScheduler": "the Brownian-tree noise (torchsde) branches on data",
    "ScoreSdeVeScheduler": "no step(): its predictor / corrector loop is step_pred / step_correct",
    "CogVideoXDPMScheduler": "diffusers' own step signature (old x0 and timestep_back), not a step() loop",
    "DDPMWuerstchenScheduler": "diffusers' own step signature (a per-sample float timestep), not a step() loop",
}
#: the entries that draw noise (a run keys it with ``set_noise_seed``, so compiled and eager runs draw alike)
STOCHASTIC = frozenset(("ddpm", "euler_ancestral", "dpm_sde", "lcm", "tcd", "ddpm_parallel", "cm",
                        "kdpm2_ancestral", "sasolver", "edm_dpm_sde"))
