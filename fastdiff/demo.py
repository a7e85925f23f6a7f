"""``fastdiff demo``: the three kernel families at work on 2-D toy problems, in about a minute on a CPU.

1. **Encoding** -- trains a small epsilon-prediction MLP on a built-in 2-D data
   set (``fastdiff.toy.two_d_shapes("moons")``, generated, no downloads) with
   ``fastdiff.add_noise_with_target``: the noised sample and the training target
   come out of one fused pass.
2. **Denoising** -- runs every sampler of ``fastdiff.sampling.list_samplers()``
   at several step counts on two targets: the exact Gaussian-mixture denoiser
   (``fastdiff.toy.GaussianMixture``, no training) and the trained network
   (through ``fastdiff.denoisers.EpsDenoiser``). Quality is the sliced
   Wasserstein distance to exact samples (the mixture) or held-out data (the
   network). ``flow_euler`` runs in flow time on the same targets, through an
   exact flow-space denoiser (the mixture) and a flow view of the epsilon network.
3. **Langevin** -- unadjusted Langevin (ULA) and MALA chains on the mixture's
   exact log-density and gradient (``fastdiff.mcmc``).

It writes PNG figures (matplotlib, Agg backend), prints a table of
``target, sampler, steps, evaluations, sliced-W, wall time`` and where the files
went. CUDA is used when present (``--device auto``).

Example:
    $ fastdiff demo --quick --out fastdiff-demo
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from .demo_run import DemoConfig, _Demo, config_for
from .random import MAX_SEED

__all__ = ["add_parser", "run", "DemoConfig", "config_for", "DemoError"]


class DemoError(Exception):
    """A user-facing error: printed as one line, exit status 2, no traceback."""


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------
def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand to ``subparsers`` (from ``ArgumentParser.add_subparsers``).

    Example:
        >>> p = argparse.ArgumentParser(); sub = p.add_subparsers(dest="command")
        >>> _ = add_parser(sub)
        >>> p.parse_args(["demo", "--quick"]).quick
        True
    """
    p = subparsers.add_parser(
        "demo",
        help="train a toy model, run every sampler and Langevin chains; write figures and a table",
        description="Show the three kernel families (encoding, denoising steps, Langevin) on 2-D toy problems: "
                    "writes PNG figures and prints a table of sampler quality and wall time.",
    )
    p.add_argument("--out", default="fastdiff-demo", metavar="DIR",
                   help="directory for the figures (created if missing; default: %(default)s)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where to run: auto = cuda when available (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="smaller sizes and fewer step counts (a few seconds)")
    p.add_argument("--seed", type=int, default=0, help="seed of data, training and all noise (default: %(default)s)")
    return p


def run(args: argparse.Namespace) -> int:
    """Run the demo for parsed ``args``; returns the exit status (0 ok, 1 a sampler failed, 2 bad arguments).

    Example:
        >>> from fastdiff.cli import main
        >>> main(["demo", "--quick", "--out", "/tmp/fastdiff-demo"])  # doctest: +SKIP
        0
    """
    try:
        device = _resolve_device(getattr(args, "device", "auto"))
        out_dir = _prepare_out(getattr(args, "out", "fastdiff-demo"))
        seed = getattr(args, "seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise DemoError(f"--seed must be an integer in [0, 2**63), got {seed!r}")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise DemoError("the demo draws its figures with matplotlib: pip install 'fastdiff[demo]'") from None
        demo = _Demo(config_for(bool(getattr(args, "quick", False))), device, out_dir, seed)
        threads = torch.get_num_threads()
        if device.type == "cpu":
            # The demo's tensors are tiny (thousands of 2-D points): intra-op threads only add
            # synchronisation, which costs 5-10x on a busy 2-core machine.
            torch.set_num_threads(1)
        try:
            with torch.random.fork_rng(devices=[]):  # the network's initialisation seeds torch's global RNG
                torch.manual_seed(seed)
                return demo.run()
        finally:
            torch.set_num_threads(threads)
    except DemoError as err:
        print(f"fastdiff demo: error: {err}", file=sys.stderr)
        return 2


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise DemoError("--device cuda: no CUDA device is available to PyTorch; use --device cpu (or auto)")
        return torch.device("cuda")
    if name == "cpu":
        return torch.device("cpu")
    raise DemoError(f"--device must be one of auto, cpu, cuda, got {name!r}")


def _prepare_out(path: str) -> Path:
    """Create ``path`` if needed and check that files can be written into it."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise DemoError("--out must be a directory path")
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise DemoError(f"--out {str(path)!r} exists and is not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DemoError(f"--out {str(path)!r}: cannot create the directory ({err.strerror or err})") from None
    try:  # os.access is not enough (read-only mounts, ACLs): try a real write
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as err:
        raise DemoError(f"--out {str(path)!r} is not writable ({err.strerror or err})") from None
    return p
