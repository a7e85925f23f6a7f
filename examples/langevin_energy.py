"""Langevin dynamics on an energy function given as an ``nn.Module`` (ULA and MALA, many chains at once).

``p(x) ~ exp(-E(x))``; ``mcmc.energy_grad`` gives ``grad log p = -grad E`` by autograd, and each
update is one fused pass with in-kernel noise. Run: python examples/langevin_energy.py
"""
import torch

from fastdiff import mcmc


class DoubleWell(torch.nn.Module):
    """E(x) = 2 (x0^2 - 1)^2 + x1^2 / 2: two modes at x0 = +-1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * (x[:, 0] ** 2 - 1.0) ** 2 + 0.5 * x[:, 1] ** 2


device = "cuda" if torch.cuda.is_available() else "cpu"
energy = DoubleWell().to(device)
grad_log_prob = mcmc.energy_grad(energy)           # x -> -grad E(x), no graph kept between steps
x0 = torch.randn(2048, 2, device=device)           # 2048 independent chains

x_ula = mcmc.langevin(grad_log_prob, x0, step_size=1e-2, n_steps=300, seed=0)
x_mala, acceptance = mcmc.mala(grad_log_prob.log_prob, x0, step_size=0.05, n_steps=300,
                               grad_log_prob=grad_log_prob, seed=1, adapt_steps=100)

for name, x in (("ULA", x_ula), ("MALA", x_mala)):
    print(f"{name:>4}: mean |x0| {x[:, 0].abs().mean():.3f}, var x1 {x[:, 1].var():.3f} (exact 1), "
          f"fraction in the right-hand well {(x[:, 0] > 0).float().mean():.3f} (exact 0.5)")
print(f"MALA acceptance rate {acceptance.mean():.2f}")
