"""Training-time noising: the noised sample and the training target from one fused pass.

``add_noise_with_target`` writes ``x_t = alpha_t x0 + sigma_t eps`` and the target (epsilon,
v, x0 or flow velocity) together, with in-kernel Philox noise. Run: python examples/training_noising.py
"""
import torch

import fastdiff
from fastdiff.toy import two_d_shapes

device = "cuda" if torch.cuda.is_available() else "cpu"
schedule = fastdiff.DiscreteVPSchedule(num_train_timesteps=1000, beta_schedule="linear")
data = two_d_shapes(20_000, "moons", seed=0).float().to(device)
net = torch.nn.Sequential(torch.nn.Linear(3, 128), torch.nn.SiLU(), torch.nn.Linear(128, 128), torch.nn.SiLU(),
                          torch.nn.Linear(128, 2)).to(device)
opt = torch.optim.Adam(net.parameters(), lr=2e-3)
gen = torch.Generator(device=device).manual_seed(0)
losses = torch.zeros(300, device=device)  # kept on the device: no host sync per step

for step in range(300):
    x0 = data[torch.randint(0, len(data), (256,), generator=gen, device=device)]
    t = torch.randint(0, schedule.num_train_timesteps, (256,), generator=gen, device=device)
    # one pass: x_t and the target (or "v_prediction", "sample", "flow"); stream=step: fresh noise per step
    x_t, eps = fastdiff.add_noise_with_target(x0, t, schedule, target="epsilon", seed=0, stream=step)
    loss = torch.nn.functional.mse_loss(net(torch.cat([x_t, t[:, None] / 1000.0], dim=1)), eps)
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses[step] = loss.detach()

for k, block in enumerate(losses.cpu().split(100)):
    print(f"steps {100 * k:>3}-{100 * k + 99}: mean epsilon loss {block.mean():.4f}")
