"""The small problem every distributed test solves, shared by the torchrun worker and the test process.

A 2-D Gaussian-mixture ring with exact denoiser and gradient (``fastdiff.toy``), a
stochastic sampler (so step noise matters) and a short Langevin run: each worker
finishes in well under a second of compute.

Failure injection for the tests: ``FASTDIFF_TEST_FAIL="rank:after:mode"`` makes that
rank, once it has finished ``after`` micro-batches, raise (``raise``), hang
(``hang``) or die without cleanup (``exit``) at its next model/gradient call.
"""
import os
import time

import torch
import torch.distributed as dist

import fastdiff
import fastdiff.distributed as fdist
import fastdiff.toy

GMM = fastdiff.toy.GaussianMixture.ring(k=4, radius=3.0, std=0.3)
SIGMAS = fastdiff.karras_sigmas(8, 0.02, 20.0)
SAMPLER = "euler_ancestral"
SEED = 1234
SHAPE = (2,)
LANGEVIN = dict(step_size=0.05, n_steps=12)

_done = 0  # micro-batches this process has finished (counted by the callback)


def _maybe_fail() -> None:
    spec = os.environ.get("FASTDIFF_TEST_FAIL")
    if not spec:
        return
    rank, after, mode = spec.split(":")
    me = dist.get_rank() if dist.is_initialized() else 0
    if me != int(rank) or _done < int(after):
        return
    if mode == "raise":
        raise RuntimeError(f"injected failure on rank {me}")
    if mode == "hang":
        time.sleep(600)
    if mode == "exit":
        os._exit(3)


def reset() -> None:
    """Forget injected failures and the micro-batch count (between jobs of one process)."""
    global _done
    _done = 0
    os.environ.pop("FASTDIFF_TEST_FAIL", None)


def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    _maybe_fail()
    return GMM.denoiser(x, sigma)


def grad_log_prob(x: torch.Tensor) -> torch.Tensor:
    _maybe_fail()
    return GMM.grad_log_prob(x)


def count(info) -> None:
    global _done
    _done += 1


def run_sample(num: int, batch_size=None, out_dir=None, seed: int = SEED, **kw):
    return fdist.sample(denoiser, SHAPE, SIGMAS, num_samples=num, sampler=SAMPLER, seed=seed,
                        batch_size=batch_size, out_dir=out_dir, callback=count, **kw)


def run_langevin(num: int, batch_size=None, out_dir=None, seed: int = SEED, **kw):
    return fdist.langevin(grad_log_prob, SHAPE, num_chains=num, seed=seed, batch_size=batch_size,
                          out_dir=out_dir, callback=count, **LANGEVIN, **kw)
