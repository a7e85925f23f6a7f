"""The run of ``fastdiff demo`` (its sizes, toy network, samplers, chains, table and figures); the command line
is :mod:`fastdiff.demo`.

Example:
    >>> config_for(True).steps
    (5, 20)
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from .random import MAX_SEED

__all__ = ["DemoConfig", "config_for"]


# ----------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoConfig:
    """Sizes of one demo run (see :func:`config_for`)."""

    n_points: int  # samples per sampler run (and per reference set)
    train_iters: int
    batch_size: int
    width: int
    lr: float
    steps: Tuple[int, ...]  # sampler step counts
    grid_steps: int  # step count shown in the per-sampler scatter grids
    langevin_steps: int
    langevin_chains: int


def config_for(quick: bool) -> DemoConfig:
    """The full demo (about a minute on 2 CPU cores) or ``--quick`` (a few seconds of compute).

    Example:
        >>> config_for(True).steps
        (5, 20)
    """
    if quick:
        return DemoConfig(n_points=1000, train_iters=500, batch_size=256, width=128, lr=1e-2, steps=(5, 20),
                          grid_steps=20, langevin_steps=150, langevin_chains=1000)
    return DemoConfig(n_points=2000, train_iters=2000, batch_size=512, width=128, lr=1e-2, steps=(5, 10, 20, 40),
                      grid_steps=10, langevin_steps=400, langevin_chains=2000)


# ----------------------------------------------------------------------------------------------
# the toy model and its denoisers
# ----------------------------------------------------------------------------------------------
class ToyMLP(torch.nn.Module):
    """A small MLP ``(x_t, t) -> eps`` for 2-D data, conditioned on Fourier features of ``t / T``.

    Example:
        >>> net = ToyMLP(width=32)
        >>> net(torch.zeros(4, 2), torch.tensor([0.0, 10.0, 500.0, 999.0])).shape
        torch.Size([4, 2])
    """

    def __init__(self, width: int = 128, n_freqs: int = 8, num_train_timesteps: int = 1000) -> None:
        super().__init__()
        self.T = float(num_train_timesteps)
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(100.0), n_freqs)) * math.pi)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2 + 2 * n_freqs, width), torch.nn.SiLU(),
            torch.nn.Linear(width, width), torch.nn.SiLU(),
            torch.nn.Linear(width, width), torch.nn.SiLU(),
            torch.nn.Linear(width, 2),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        phase = (t.to(x.dtype) / self.T)[:, None] * self.freqs.to(x.dtype)
        return self.net(torch.cat([x, torch.sin(phase), torch.cos(phase)], dim=1))


def _eps_as_flow(net: torch.nn.Module, schedule: Any):
    """The epsilon network as a flow-time denoiser for ``flow_euler`` (x_s = (1 - s) x0 + s eps).

    With ``sigma = s / (1 - s)`` the VE sample is ``x = x_s / (1 - s)`` and the network
    input ``x / sqrt(sigma^2 + 1) = x_s / sqrt((1 - s)^2 + s^2)``; the x0 estimate is
    ``x_s / (1 - s) - s / (1 - s) * eps`` -- an affine conversion the step kernel fuses.
    """
    from .denoisers import EpsDenoiser

    class EpsAsFlow(EpsDenoiser):
        def flow_timesteps(self, s: torch.Tensor) -> torch.Tensor:
            s = torch.as_tensor(s, dtype=torch.float64)
            return self.schedule.sigma_to_t(s / (1.0 - s))  # host float64, once per run

        def flow_conversion(self, s: float) -> Tuple[float, float]:
            s = float(s)
            return 1.0 / (1.0 - s), -s / (1.0 - s)

        def flow_raw(self, x_s: torch.Tensor, s: torch.Tensor, t: Optional[torch.Tensor] = None,
                     **kw: Any) -> torch.Tensor:
            scale = torch.rsqrt((1.0 - s) ** 2 + s * s).to(x_s.dtype)[:, None]
            return self.model(x_s * scale, t, **kw)

    return EpsAsFlow(net, schedule)


def _ve_to_flow(sigmas: torch.Tensor) -> torch.Tensor:
    """Flow times ``s = sigma / (1 + sigma)`` of VE noise levels (0 stays 0)."""
    return sigmas / (1.0 + sigmas)


def _gmm_flow_denoiser(gmm: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Exact E[x0 | x_s] for x_s = (1 - s) x0 + s eps and x0 from the mixture, for every s in [0, 1].

    Component k gives x_s ~ N((1 - s) mu_k, ((1 - s)^2 s_k^2 + s^2) I) and the posterior mean
    mu_k + (1 - s) s_k^2 / ((1 - s)^2 s_k^2 + s^2) (x_s - (1 - s) mu_k).
    """

    def denoise(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        xd = x.to(torch.float64)
        mu, sk, w = (gmm.means.to(x.device), gmm.stds.to(x.device), gmm.weights.to(x.device))
        s = s.to(torch.float64).reshape(-1, 1)
        a = 1.0 - s
        var = a * a * sk[None] ** 2 + s * s  # (N, K)
        diff = xd[:, None, :] - a[:, :, None] * mu[None]  # (N, K, D)
        logj = torch.log(w)[None] - 0.5 * (diff * diff).sum(-1) / var - 0.5 * gmm.dim * torch.log(var)
        r = torch.softmax(logj, dim=1)
        est = mu[None] + (a * sk[None] ** 2 / var)[:, :, None] * diff
        return (r[:, :, None] * est).sum(1).to(x.dtype)

    return denoise


class _Counted:
    """Counts calls to a callable (host counter: no device sync)."""

    def __init__(self, fn: Callable) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, *a: Any, **kw: Any) -> Any:
        self.calls += 1
        return self.fn(*a, **kw)


# ----------------------------------------------------------------------------------------------
# the demo
# ----------------------------------------------------------------------------------------------
@dataclass
class _Row:
    target: str
    sampler: str
    steps: int
    evals: int
    sw: float
    ms: float
    note: str = ""


class _Demo:
    def __init__(self, cfg: DemoConfig, device: torch.device, out: Path, seed: int) -> None:
        self.cfg, self.device, self.out, self.seed = cfg, device, out, seed
        self.rows: List[_Row] = []
        self.samples: Dict[Tuple[str, str, int], torch.Tensor] = {}
        self.notes: List[str] = []
        self.failures: List[str] = []
        self.files: List[Path] = []

    def _seed(self, offset: int) -> int:
        """The seed of one of the run's random streams: ``--seed + offset``, wrapped into [0, 2**63) (any
        seed the library accepts works; below 2**62 nothing wraps)."""
        return (self.seed + offset) % (MAX_SEED + 1)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self) -> int:
        import fastdiff
        from fastdiff import toy
        from fastdiff.demo_mcmc import run_mcmc_panel

        t_start = time.perf_counter()
        cfg = self.cfg
        print(f"fastdiff {fastdiff.__version__} demo on {self._device_name()} "
              f"({'quick' if cfg == config_for(True) else 'full'}: {cfg.n_points} points, steps {list(cfg.steps)})")
        gmm = toy.GaussianMixture.ring(k=8, radius=4.0, std=0.3)

        print("\n[1/4] encoding: training an epsilon-prediction MLP with fastdiff.add_noise_with_target")
        net, schedule, losses, train_s = self._train()
        print(f"      {cfg.train_iters} iterations in {train_s:.1f} s, final loss {losses[-50:].mean():.3f}")

        print("\n[2/4] denoising: every sampler at steps "
              f"{list(cfg.steps)} on the exact mixture and on the trained model")
        t0 = time.perf_counter()
        self._denoise(gmm, net, schedule)
        print(f"      {len(self.rows)} sampler runs in {time.perf_counter() - t0:.1f} s")

        print("\n[3/4] Langevin: ULA and MALA on the mixture's exact log-density")
        t0 = time.perf_counter()
        chains = self._langevin(gmm)
        print(f"      {2 * cfg.langevin_steps} updates of {cfg.langevin_chains} chains "
              f"in {time.perf_counter() - t0:.1f} s")

        print("\n[4/4] MCMC: ULA, MALA, underdamped Langevin and HMC on an ill-conditioned Gaussian and a banana")
        t0 = time.perf_counter()
        run_mcmc_panel(self)  # its rows join the table, its figure is mcmc.png
        print(f"      the MCMC panel in {time.perf_counter() - t0:.1f} s")

        t0 = time.perf_counter()
        self._figures(losses, chains)
        print(f"\nfigures drawn in {time.perf_counter() - t0:.1f} s")
        self._print_table()
        for note in self.notes:
            print(f"note: {note}")
        print(f"\nfigures written to {self.out.resolve()}:")
        for f in self.files:
            print(f"  {f.name}")
        print(f"total wall time {time.perf_counter() - t_start:.1f} s")
        if self.failures:
            print(f"fastdiff demo: error: {len(self.failures)} sampler run(s) failed: "
                  + "; ".join(self.failures), file=sys.stderr)
            return 1
        return 0

    def _device_name(self) -> str:
        if self.device.type == "cuda":
            return f"cuda ({torch.cuda.get_device_name(self.device)})"
        return "cpu"

    # --- 1. encoding -------------------------------------------------------------------------
    def _train(self):
        import fastdiff
        from fastdiff import toy
        from tqdm.auto import trange

        cfg, dev = self.cfg, self.device
        schedule = fastdiff.DiscreteVPSchedule(1000, 1e-4, 0.02, "linear")
        T = schedule.num_train_timesteps
        data = toy.two_d_shapes(50_000, "moons", seed=self.seed).to(dev, torch.float32)
        gen = torch.Generator(device=dev).manual_seed(self.seed)
        net = ToyMLP(cfg.width, num_train_timesteps=T).to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        sched_lr = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.train_iters,
                                                       pct_start=0.1)
        losses = torch.zeros(cfg.train_iters, device=dev)  # kept on the device: no sync per iteration
        self._sync()
        t0 = time.perf_counter()
        for it in trange(cfg.train_iters, desc="train", leave=False):
            idx = torch.randint(0, data.shape[0], (cfg.batch_size,), generator=gen, device=dev)
            t = torch.randint(0, T, (cfg.batch_size,), generator=gen, device=dev)
            # the fused encoding op: x_t = alpha_t x0 + sigma_t eps and the target eps, one pass
            x_t, eps = fastdiff.add_noise_with_target(data[idx], t, schedule, target="epsilon",
                                                      seed=self.seed, stream=it)
            loss = torch.nn.functional.mse_loss(net(x_t, t.to(torch.float32)), eps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched_lr.step()
            losses[it] = loss.detach()
        self._sync()
        train_s = time.perf_counter() - t0
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        return net, schedule, losses.cpu(), train_s

    # --- 2. denoising ------------------------------------------------------------------------
    def _denoise(self, gmm: Any, net: torch.nn.Module, schedule: Any) -> None:
        import fastdiff
        from fastdiff import toy
        from fastdiff.denoisers import EpsDenoiser
        from fastdiff.sampling import initial_noise, list_samplers, sample
        from tqdm.auto import tqdm

        cfg, dev, n = self.cfg, self.device, self.cfg.n_points
        from fastdiff.samplers import NEEDS_UNCOND

        samplers = [s for s in list_samplers() if s not in NEEDS_UNCOND]  # the demo's targets are unguided
        self.sampler_names = samplers
        flow = fastdiff.FlowMatchingSchedule(1000)

        def toy_sigmas(k: int) -> torch.Tensor:
            return fastdiff.karras_sigmas(k, schedule.sigma_min, schedule.sigma_max)

        targets = {
            # name: (ve denoiser, flow denoiser, VE sigmas(n), flow sigmas(n), truth)
            "mixture": (_Counted(gmm.denoiser), _Counted(_gmm_flow_denoiser(gmm)),
                        lambda k: fastdiff.karras_sigmas(k, 0.01, 40.0),
                        lambda k: flow.sigmas(k),
                        gmm.sample(n, seed=self._seed(1), dtype=torch.float32)),
            "model": (EpsDenoiser(_Counted(net), schedule), _eps_as_flow(_Counted(net), schedule),
                      toy_sigmas,
                      lambda k: _ve_to_flow(toy_sigmas(k)),
                      toy.two_d_shapes(n, "moons", seed=self._seed(1)).float()),
        }
        # the sampling-noise floor: sliced-W between two independent exact sample sets of the same size. One
        # pair is a noisy number (0.11-0.26 over seeds at 2000 points on the ring), so it is the mean and the
        # spread over _FLOOR_PAIRS independent pairs; a sampler inside that spread is as good as exact.
        fresh = {"mixture": lambda j: gmm.sample(n, seed=self._seed(100 + j), dtype=torch.float32),
                 "model": lambda j: toy.two_d_shapes(n, "moons", seed=self._seed(100 + j))}
        self.floors = {tg: _Floor([_sw(fresh[tg](2 * j), fresh[tg](2 * j + 1)) for j in range(_FLOOR_PAIRS)])
                       for tg in targets}
        self.truth = {k: v[4] for k, v in targets.items()}
        z = initial_noise((n, 2), self.seed, device=dev)
        runs = [(tg, s, k) for tg in targets for s in samplers for k in cfg.steps]
        bar = tqdm(runs, desc="sample", leave=False)
        warm: set = set()
        for tg, name, k in bar:
            bar.set_postfix_str(f"{tg}/{name}/{k}", refresh=False)
            den_ve, den_flow, ve_sig, flow_sig, truth = targets[tg]
            is_flow = name == "flow_euler"
            den = den_flow if is_flow else den_ve
            sigmas = (flow_sig if is_flow else ve_sig)(k)
            counter = den.model if isinstance(den, EpsDenoiser) else den
            x = z * float(sigmas[0])
            try:
                if dev.type == "cuda" and (tg, name) not in warm:
                    # compile the Triton kernels outside the timed run
                    sample(den, x, sigmas, sampler=name, seed=self._seed(7))
                    warm.add((tg, name))
                counter.calls = 0
                self._sync()
                t0 = time.perf_counter()
                with torch.no_grad():
                    out = sample(den, x, sigmas, sampler=name, seed=self._seed(7))
                self._sync()
                ms = 1e3 * (time.perf_counter() - t0)
            except Exception as err:  # report and go on: one broken sampler must not hide the others
                self.failures.append(f"{tg}/{name}/{k}: {type(err).__name__}: {err}")
                self.rows.append(_Row(tg, name, k, 0, math.nan, math.nan, "failed"))
                continue
            out = out.float().cpu()
            finite = bool(torch.isfinite(out).all())
            sw = _sw(out, truth) if finite else math.inf
            self.samples[(tg, name, k)] = out
            self.rows.append(_Row(tg, name, k, counter.calls, sw, ms, "" if finite else "non-finite"))
        bar.close()
        self.notes.append("flow_euler runs in flow time s (x_s = (1 - s) x0 + s eps): on the mixture with the "
                          "exact flow-space posterior mean and FlowMatchingSchedule times; on the model through "
                          "sigma = s / (1 - s) at the flow times of its Karras sigmas, where it equals euler")
        self.notes.append("ddim (eta=0) equals euler and ddpm equals euler_ancestral: in VE variables their "
                          "updates coincide")
        self.notes.append("the model's truth is held-out data; its sliced-W also includes the training error")
        caveat = [f"{s} at <= {k} steps" for s, k in _FEW_STEP_CAVEAT.items() if min(cfg.steps) <= k]
        if caveat:
            self.notes.append(f"{', '.join(caveat)} is far off, and k-diffusion's sampler of "
                              "the same name does the same; it converges by 20 steps")

    # --- 3. Langevin -------------------------------------------------------------------------
    def _langevin(self, gmm: Any) -> Dict[str, Any]:
        import fastdiff
        from fastdiff import mcmc

        cfg, dev = self.cfg, self.device
        n, n_steps = cfg.langevin_chains, cfg.langevin_steps
        truth = gmm.sample(n, seed=self._seed(3), dtype=torch.float32)
        # start spread over the ring so that every mode gets chains (Langevin does not hop between
        # well-separated modes; the demo shows local mixing and the accuracy of each update)
        x0 = 3.0 * fastdiff.philox_normal((n, 2), self._seed(11), 0, device=dev)
        every = max(1, n_steps // 10)
        results: Dict[str, Any] = {
            "floor": _Floor([_sw(gmm.sample(n, seed=self._seed(200 + 2 * j), dtype=torch.float32),
                                 gmm.sample(n, seed=self._seed(201 + 2 * j), dtype=torch.float32))
                             for j in range(_FLOOR_PAIRS)])}
        for name in ("ULA", "MALA"):
            traj: List[torch.Tensor] = []
            snaps: List[Tuple[int, torch.Tensor]] = [(0, x0.clone())]

            def keep(info: Dict[str, Any]) -> None:
                traj.append(info["x"][:6].clone())
                if (info["i"] + 1) % every == 0:
                    snaps.append((info["i"] + 1, info["x"].clone()))

            self._sync()
            t0 = time.perf_counter()
            if name == "ULA":
                x = mcmc.langevin(gmm.grad_log_prob, x0, 0.01, n_steps, seed=self._seed(5), callback=keep,
                                  progress=True)
                extra = "h=0.01"
            else:
                x, acc = mcmc.mala(gmm.log_prob, x0, 0.05, n_steps, grad_log_prob=gmm.grad_log_prob,
                                   seed=self._seed(6), adapt_steps=n_steps // 4, callback=keep, progress=True)
                extra = f"acceptance {float(acc.mean()):.2f}"
            self._sync()
            ms = 1e3 * (time.perf_counter() - t0)
            x = x.float().cpu()
            sw = _sw(x, truth)
            curve = [(i, _sw(s.float().cpu(), truth)) for i, s in snaps]
            self.rows.append(_Row("mixture", name.lower(), n_steps, n_steps, sw, ms, extra))
            results[name] = dict(x=x, traj=torch.stack([x0[:6]] + traj).cpu(), curve=curve, truth=truth)
        return results

    # --- output ------------------------------------------------------------------------------
    def _print_table(self) -> None:
        print()
        head = f"{'target':<8} {'sampler':<19} {'steps':>5} {'evals':>5} {'sliced-W':>9} {'time (ms)':>10}  note"
        print(head)
        print("-" * len(head))
        for r in self.rows:
            sw = "failed" if r.note == "failed" else f"{r.sw:9.4f}"
            ms = "-" if math.isnan(r.ms) else f"{r.ms:10.1f}"
            floor = self.floors.get(r.target) if r.sampler not in ("ula", "mala") else None
            note = r.note
            if floor is not None and math.isfinite(r.sw) and r.sw <= floor.hi:
                note = (note + "; " if note else "") + "within noise"
            print(f"{r.target:<8} {r.sampler:<19} {r.steps:>5d} {r.evals:>5d} {sw:>9} {ms:>10}  {note}")
        print(f"sampling-noise floor of sliced-W at {self.cfg.n_points} points (exact vs exact, mean +- sd "
              f"[min, max] over {_FLOOR_PAIRS} independent pairs): "
              + "; ".join(f"{k} {v}" for k, v in self.floors.items()))
        print("  rows marked 'within noise' are no further from the truth than a second exact sample can be: "
              "their order among themselves is noise")

    def _save(self, fig: Any, name: str) -> None:
        path = self.out / name
        fig.savefig(path, dpi=90)
        self.files.append(path)

    def _figures(self, losses: torch.Tensor, chains: Dict[str, Any]) -> None:
        from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg canvas
        from matplotlib.ticker import NullFormatter

        from . import sampling

        stochastic = set(getattr(sampling, "STOCHASTIC", ()))

        # training loss
        fig = Figure(figsize=(6.4, 3.8))
        ax = fig.add_subplot()
        curve = losses.double()
        ema, acc = [], float(curve[0])
        for v in curve.tolist():
            acc = 0.98 * acc + 0.02 * v
            ema.append(acc)
        ax.plot(curve.numpy(), color="0.8", lw=0.6, label="per batch")
        ax.plot(ema, color="C0", label="moving average")
        ax.set(xlabel="iteration", ylabel="epsilon MSE", yscale="log",
               title="training with add_noise_with_target\n(moons data, DiscreteVPSchedule)")
        ax.legend()
        fig.tight_layout()
        self._save(fig, "training_loss.png")

        # samples vs truth, one grid per target
        names = self.sampler_names
        k = self.cfg.grid_steps
        for tg, title in (("mixture", "exact Gaussian mixture"), ("model", "trained model (moons)")):
            ncol = 4
            nrow = math.ceil((len(names) + 1) / ncol)
            fig = Figure(figsize=(2.4 * ncol, 2.4 * nrow))
            truth = self.truth[tg].numpy()
            lim = float(abs(truth).max()) * 1.3
            panels = [("truth", truth)] + [(s, self.samples.get((tg, s, k))) for s in names]
            for j, (label, pts) in enumerate(panels):
                ax = fig.add_subplot(nrow, ncol, j + 1)
                ax.scatter(truth[:, 0], truth[:, 1], s=1, color="0.8", rasterized=True)
                if pts is not None and label != "truth":
                    p = pts[torch.isfinite(pts).all(1)].numpy()
                    ax.scatter(p[:, 0], p[:, 1], s=1, color="C3", rasterized=True)
                    sw = next(r.sw for r in self.rows if (r.target, r.sampler, r.steps) == (tg, label, k))
                    mark = " *" if label in _FEW_STEP_CAVEAT and k <= _FEW_STEP_CAVEAT[label] else ""
                    label = f"{label}{mark}\nSW {sw:.3f}"
                elif label != "truth":
                    label = f"{label}\n(no result)"
                ax.set_title(label, fontsize=8)
                ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xticks=[], yticks=[], aspect="equal")
            fig.suptitle(f"{title}: samples (red) vs truth (grey), {k} steps", fontsize=10)
            caption = _grid_caption((k,), names)
            if caption:
                fig.text(0.5, 0.005, caption, ha="center", va="bottom", fontsize=8, style="italic", wrap=True)
                fig.tight_layout(rect=(0, 0.035, 1, 1))
            else:
                fig.tight_layout()
            self._save(fig, f"samples_{tg}.png")

        # error vs steps, log-log; one legend for both panels, outside the axes
        fig = Figure(figsize=(13, 5.2))
        handles: Dict[str, Any] = {}
        for j, (tg, title) in enumerate((("mixture", "exact Gaussian mixture"), ("model", "trained model"))):
            ax = fig.add_subplot(1, 2, j + 1)
            for c, s in enumerate(names):
                pts = [(r.steps, r.sw) for r in self.rows
                       if r.target == tg and r.sampler == s and math.isfinite(r.sw)]
                if not pts:
                    continue
                xs, ys = zip(*sorted(pts))
                color, marker = _style(c)
                (h,) = ax.plot(xs, ys, marker=marker, ms=5, lw=1.3, label=s, color=color,
                               ls="--" if s in stochastic else "-")
                handles.setdefault(s, h)
            fl = self.floors[tg]
            band = ax.axhspan(fl.lo, fl.hi, color="0.85", zorder=0)
            (line,) = ax.plot([], [], color="k", lw=0.8, ls=":")
            ax.axhline(fl.mean, color="k", lw=0.8, ls=":")
            handles.setdefault("noise floor: exact vs\nexact (mean, min-max)", (band, line))
            ax.set(xscale="log", yscale="log", xlabel="steps", ylabel="sliced Wasserstein", title=title)
            ax.set_xticks(list(self.cfg.steps), [str(s) for s in self.cfg.steps])
            ax.xaxis.set_minor_formatter(NullFormatter())
            _log_y_ticks(ax)
        fig.legend(list(handles.values()), list(handles.keys()), loc="center left", bbox_to_anchor=(0.81, 0.5),
                   fontsize=8, frameon=False, handlelength=3)
        fig.suptitle("sample error vs steps (dashed: stochastic samplers)", fontsize=10)
        caption = _grid_caption(self.cfg.steps, names)
        bottom = 0.05 if caption else 0.0
        if caption:
            fig.text(0.01, 0.01, caption, ha="left", va="bottom", fontsize=8, style="italic")
        fig.tight_layout(rect=(0, bottom, 0.8, 1))
        self._save(fig, "error_vs_steps.png")

        # Langevin chains
        fig = Figure(figsize=(13, 4.2))
        for j, name in enumerate(("ULA", "MALA")):
            ax = fig.add_subplot(1, 3, j + 1)
            ch = chains[name]
            t, x = ch["truth"].numpy(), ch["x"].numpy()
            ax.scatter(t[:, 0], t[:, 1], s=1, color="0.8", rasterized=True)
            ax.scatter(x[:, 0], x[:, 1], s=1, color="C0", rasterized=True)
            tr = ch["traj"].numpy()
            for c in range(tr.shape[1]):
                ax.plot(tr[:, c, 0], tr[:, c, 1], lw=0.7, color=f"C{1 + c % 9}")
                ax.plot(tr[0, c, 0], tr[0, c, 1], "k.", ms=4)
            sw = ch["curve"][-1][1]
            ax.set(title=f"{name}, SW {sw:.3f}\nfinal states (blue), truth (grey),\n"
                         f"{tr.shape[1]} chains' paths (one colour each, start: black dot)", aspect="equal",
                   xlim=(-6, 6), ylim=(-6, 6))
            ax.title.set_fontsize(9)
        ax = fig.add_subplot(1, 3, 3)
        for j, name in enumerate(("ULA", "MALA")):
            it, sw = zip(*chains[name]["curve"])
            ax.plot(it, sw, marker="o", ms=3, label=name)
        fl = chains["floor"]
        ax.axhspan(fl.lo, fl.hi, color="0.85", zorder=0, label="exact vs exact (min-max)")
        ax.axhline(fl.mean, color="k", lw=0.8, ls=":", label="sampling-noise floor (mean)")
        ax.set(yscale="log", xlabel="iteration", ylabel="sliced Wasserstein", title="convergence")
        _log_y_ticks(ax)
        ax.legend(fontsize=8)
        fig.tight_layout()
        self._save(fig, "langevin.png")


def _sw(a: torch.Tensor, b: torch.Tensor) -> float:
    # 64 directions resolve 2-D clouds well; the sort of the projections dominates the cost
    from .toy import sliced_wasserstein

    return sliced_wasserstein(a.float().cpu(), b.float().cpu(), n_projections=64, seed=0)


_FLOOR_PAIRS = 10  # independent exact-vs-exact pairs behind each sampling-noise floor

# Samplers that are known to fail at few steps, in k-diffusion as well: name -> the largest such step count.
# dpmpp_3m_sde's third-order multistep update on a 10-step Karras schedule overshoots (its history spans
# steps too far apart); k-diffusion's sample_dpmpp_3m_sde gives the same scatter, and both converge by 20 steps.
_FEW_STEP_CAVEAT = {"dpmpp_3m_sde": 10}


def _grid_caption(steps: Tuple[int, ...], names: List[str]) -> str:
    """A caption for the samplers of ``_FEW_STEP_CAVEAT`` when a figure shows them at such step counts."""
    hit = [s for s in names if s in _FEW_STEP_CAVEAT and min(steps) <= _FEW_STEP_CAVEAT[s]]
    if not hit:
        return ""
    return "; ".join(f"* {s} at {_FEW_STEP_CAVEAT[s]} steps or fewer" for s in hit) + (
        ": far off, as expected -- k-diffusion's sampler of the same name does the same at these step counts "
        "(too few steps for its third-order multistep SDE update); it converges by 20 steps.")


class _Floor:
    """The sliced-W between independent exact sample sets: mean, standard deviation and range."""

    def __init__(self, values: List[float]) -> None:
        self.values = list(values)
        n = len(self.values)
        self.mean = sum(self.values) / n
        self.sd = math.sqrt(sum((v - self.mean) ** 2 for v in self.values) / max(n - 1, 1))
        self.lo, self.hi = min(self.values), max(self.values)

    def __str__(self) -> str:
        return f"{self.mean:.4f} +- {self.sd:.4f} [{self.lo:.4f}, {self.hi:.4f}]"


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _style(i: int) -> Tuple[Any, str]:
    """A distinct (colour, marker) per curve: tab10's ten qualitative colours, and a new marker each cycle of
    colours and within it, so no two of up to 40 curves look alike."""
    from matplotlib import colormaps

    return colormaps["tab10"](i % 10), _MARKERS[(i + i // 10) % len(_MARKERS)]


def _log_y_ticks(ax: Any) -> None:
    """Log y axis labelled at 1, 2, 5 x 10^k only (labelling every minor tick makes the labels overlap)."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    ax.yaxis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_locator(LogLocator(base=10.0, subs=tuple(float(k) for k in range(1, 10))))
    ax.yaxis.set_minor_formatter(NullFormatter())
