"""Pure Triton device code for fastdiff (imported as ``fastdiff.kernels``).

Nothing here touches the torch API: each module holds ``@triton.jit`` functions
only. Launchers, validation and the PyTorch-facing ops live in ``fastdiff.ops``.

Modules:
    philox    counter-based Philox4x32-10 normals keyed by (seed, row, stream, column)
    encode    forward noising x_t = a*x0 + s*noise (+ training target) in one pass
    step      the denoising-step family: model output -> denoised -> combination -> noise
    langevin  x + h*g + sqrt(2*h*T)*noise and the Metropolis accept/select
    underdamped  one fused BAOAB step of kinetic Langevin (kick, drift, exact OU refresh, drift)
"""

__all__ = ["philox", "encode", "step", "langevin", "underdamped"]
