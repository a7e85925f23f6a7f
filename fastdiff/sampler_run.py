"""The context a sampler runs in: its coefficient table, its model calls, its noise and its reports.

A sampler (:mod:`fastdiff.samplers`) is written once against :class:`Run`: it registers one coefficient row per
model evaluation with :meth:`Run.row` (plus, for a face that adds EDM churn in a pass of its own,
:meth:`Run.pass_row`), calls :meth:`Run.plan` (one table, moved to the device once), then alternates
:meth:`Run.eval` and :meth:`Run.step`. What differs between faces is a subclass:

* :class:`SamplerContext` (``fastdiff.sample``): host-float schedules, a :class:`~fastdiff.denoisers.Denoiser`
  whose output conversion and guidance are fused into the step, Philox noise keyed by ``(seed, row id,
  stream)``, EDM churn fused into the previous step's pass;
* ``fastdiff.k_diffusion``'s run: 0-d tensor schedules (k-diffusion's float32 roundings), k-diffusion's
  ``model(x, sigma * s_in)`` call, noise from the global RNG or a caller's ``noise_sampler``.

Nothing in a step reads device memory on the host.

CFG++ (Chung et al. 2024) and the other samplers that weigh the *unconditional* x0 estimate ``U`` beside the
guided one ``D`` use this API (the face's side in brackets):

* a sampler puts ``out_u=`` (the weight of ``U`` in the new sample) and/or ``aux_u=`` (its weight in the
  auxiliary output, e.g. ``aux_d=0.0, aux_u=1.0`` to keep ``U`` as the next step's history entry) into
  :meth:`Run.row`, next to the usual columns (``out_x``, ``out_d``, ``out_h``, ...; :func:`fastdiff.ops.step.step_coefs`
  names them all). A row's update is then ``out_x*x + out_d*D + out_u*U + sum_k out_h[k]*h[k] + out_noise*z``
  and its aux ``aux_x*x_eval + aux_d*D + aux_u*U``, all in the one fused pass;
* :meth:`Run.plan` marks the rows with a non-zero ``out_u``/``aux_u`` (:attr:`Run.uses_uncond`) and calls
  :meth:`Run.check_uncond`, which raises ``ValueError("... needs classifier-free guidance ...")`` when the run has
  no unconditional estimate to give (the base class never has one);
* :meth:`Run.uncond_arg` gives the ``uncond=`` argument of :func:`fastdiff.ops.step.fused_step` for evaluation
  ``k`` (None on rows that do not use it, so their passes cost what they did):
  :class:`SamplerContext` returns ``"halves"``: its guided model output holds [uncond; cond] halves, and the pass
  converts the uncond half with the row's ``in_x``/``in_m`` itself; ``fastdiff.k_diffusion``'s ``KDiffusionRun``
  returns the tensor :attr:`~fastdiff.k_diffusion.run.KDiffusionRun.uncond` that its model call left there (the
  ComfyUI face's run subclasses it, sets ``provides_uncond = True`` and stores ComfyUI's
  ``args["uncond_denoised"]`` from its post-CFG hook in ``run.uncond`` during each model call; the hook must be
  registered with ``disable_cfg1_optimization=True``, as ComfyUI's CFG++ samplers do, so that at cfg = 1 the
  unconditional prediction is still computed; without a negative conditioning ComfyUI's uncond prediction is
  zeros, which the face then passes on as it is);
* :attr:`Run.flow_sigmas`: True when the run's noise levels are flow times ``s`` and its samples flow samples
  ``x_s = (1 - s) x0 + s eps`` (ComfyUI's CONST model sampling, e.g. SD3 / Flux). Samplers whose arithmetic
  differs there (the RF branch of ``euler_ancestral_cfg_pp``) read it; ``fastdiff.sample`` runs every VE
  sampler in VE variables (a FlowDenoiser maps flow models there), so its context leaves it False.

A face after ComfyUI's numbers passes ``corrector_uncond="corrector"`` to ``sample_dpmpp_2s_ancestral_cfg_pp``
(ComfyUI's corrector re-bases with its own evaluation's ``U``; the core's default is the predictor's, the
consistent rule). Example of a run that reports ``U`` (what the ComfyUI face's run does from its hook)::

    class HookedRun(KDiffusionRun):
        provides_uncond = True          # and flow_sigmas = True for a CONST model

        def eval(self, x, k):           # or: set self.uncond inside the post-CFG hook the model call runs
            denoised = super().eval(x, k)   # clears self.uncond, then calls the model
            return denoised             # the hook has stored args["uncond_denoised"] in self.uncond
"""
from __future__ import annotations

import collections
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .denoisers import Denoiser
from .ops._common import FLOAT_DTYPES
from .ops.step import COEF_DEFAULTS, MAX_HISTORY, coef_table, fused_step

__all__ = ["Run", "SamplerContext", "History", "PRE_CHURN_STREAM", "check_no_repeats"]

#: Philox stream of the EDM churn noise added before the first evaluation
PRE_CHURN_STREAM = 0


class History:
    """The last few history tensors (x0 estimates or derivatives), newest first, for ``fused_step(history=...)``."""

    def __init__(self, maxlen: int) -> None:
        if not 0 <= maxlen <= MAX_HISTORY:
            raise ValueError(f"history length must be in [0, {MAX_HISTORY}], got {maxlen}")
        self._items: collections.deque = collections.deque(maxlen=max(maxlen, 1))
        self.maxlen = maxlen

    def push(self, t: torch.Tensor) -> None:
        if self.maxlen:
            self._items.appendleft(t)

    def take(self, n: int) -> Tuple[torch.Tensor, ...]:
        """The ``n`` newest entries (the coefficient rows were built knowing how many exist)."""
        if n > len(self._items) or (n and not self.maxlen):
            raise RuntimeError(f"sampler bug: asked for {n} history entries, {len(self._items)} exist")
        return tuple(list(self._items)[:n])


def check_no_repeats(sig: Sequence[float]) -> None:
    """Raise ValueError if two consecutive entries of the host list ``sig`` are equal.

    A repeated noise level is a step of length zero: the multistep and log-sigma solvers (lms, dpmpp_2m,
    dpmpp_2m_sde, dpmpp_3m_sde, unipc) divide by it, so every sampler and face rejects it up front.

    Example:
        >>> check_no_repeats([20.0, 5.0, 5.0, 1.0, 0.0])
        Traceback (most recent call last):
        ...
        ValueError: sigmas must be strictly decreasing (no repeated values): sigmas[2] = 5.0 repeats sigmas[1]
    """
    for i in range(1, len(sig)):
        if sig[i] == sig[i - 1]:
            raise ValueError(f"sigmas must be strictly decreasing (no repeated values): sigmas[{i}] = {sig[i]} "
                             f"repeats sigmas[{i - 1}]")


def _coef_row(coefs: Dict[str, Any]) -> Dict[str, float]:
    row = {name: float(v) for name, v in coefs.items() if name in COEF_DEFAULTS}
    row.update({f"out_h{k}": float(v) for k, v in enumerate(coefs.get("out_h", ()))})
    return row


class Run:
    """One sampling run: host schedule, coefficient rows, the device table, the loop's calls.

    Subclasses supply the model call (:meth:`eval`), the noise of a step (:meth:`step`), the x0 conversion of
    a model output (:meth:`conversion`), the per-step churn pass (:meth:`churn`) and the callback (:meth:`report`).
    """

    #: EDM churn noise of step i+1 rides in the last pass of step i (True) or gets a pass of its own (False)
    fuses_churn = False
    #: Heun's corrector keeps the derivative d1 as its history entry (True) or the x0 estimate D1 (False)
    heun_keeps_derivative = False
    #: the noise levels are flow times s and x the flow sample (1 - s) x0 + s eps (ComfyUI's CONST models)
    flow_sigmas = False

    def __init__(self, x: torch.Tensor, sigmas: Sequence[Any], backend: str) -> None:
        self.sigmas = list(sigmas)
        self.n = len(self.sigmas) - 1
        self.backend = backend
        self.device, self.batch, self.x_shape = x.device, x.shape[0], tuple(x.shape)
        self.table_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        self._rows: List[Dict[str, Any]] = []   # one per model evaluation, in order
        self._passes: List[Dict[str, Any]] = []  # rows without a model evaluation (after the evaluation rows)
        self._planned = False
        self._replay = [0, 0]
        self._churn: Sequence[float] = ()

    # --- planning (host) ---------------------------------------------------------------------
    def row(self, sigma: Any, **coefs: Any) -> int:
        """Register model evaluation ``k`` at noise level ``sigma`` and its step coefficients; returns ``k``."""
        if self._planned:  # CUDA-graph capture re-runs the sampler: the same rows, already in the table
            self._replay[0] += 1
            return self._replay[0] - 1
        self._rows.append(dict(coefs, sigma=sigma))
        return len(self._rows) - 1

    def pass_row(self, **coefs: Any) -> int:
        """Register a step without a model evaluation (``fused_step(x, x, ...)``); returns its pass index."""
        if self._planned:
            self._replay[1] += 1
            return self._replay[1] - 1
        self._passes.append(coefs)
        return len(self._passes) - 1

    def churn_plan(self, churn: Sequence[float]) -> List[Optional[int]]:
        """Set up the churn noise of each step (scales from :func:`~fastdiff.solvers.churn_schedule`)."""
        self._churn = churn
        if self.fuses_churn:
            return [None] * len(churn)
        return [self.pass_row(in_x=0.0, in_m=0.0, out_x=1.0, out_noise=c) if c else None for c in churn]

    def next_churn(self, i: int) -> float:
        """The noise scale the last pass of step ``i`` adds for step ``i + 1`` (0 unless churn is fused)."""
        if not self.fuses_churn or i + 1 >= len(self._churn):
            return 0.0
        return self._churn[i + 1]

    def conversion(self, sigma: Any) -> Tuple[float, float]:
        """``(in_x, in_m)`` of the model output at ``sigma`` (default: the model returns the x0 estimate)."""
        return 0.0, 1.0

    def guidance(self) -> float:
        return 0.0

    def plan(self) -> None:
        """Build the run's coefficient table (host floats -> one copy on the device)."""
        if self._planned:
            self._replay = [0, 0]
            return
        rows = []
        for r in self._rows:
            c = _coef_row(r)
            if "in_x" not in r:
                in_x, in_m = self.conversion(r["sigma"])
                c.update(in_x=float(in_x), in_m=float(in_m))
            c["guidance"] = self.guidance()
            rows.append(c)
        rows += [_coef_row(p) for p in self._passes]
        self.coefs = [dict(COEF_DEFAULTS, **c) for c in rows]
        # rows whose x0 estimate is the model output itself (planned once; the loop only checks the dtype)
        self._raw_is_x0 = [c["in_x"] == 0.0 and c["in_m"] == 1.0 and c["guidance"] == 0.0 for c in self.coefs]
        #: rows whose pass weighs the unconditional x0 estimate (CFG++); the others pass ``uncond=None``
        self.uses_uncond = [c["out_u"] != 0.0 or c["aux_u"] != 0.0 for c in self.coefs]
        if any(self.uses_uncond):
            self.check_uncond()
        self.table = coef_table(rows or [COEF_DEFAULTS], device=self.device, dtype=self.table_dtype)
        self._finish_plan([r["sigma"] for r in self._rows])
        self._planned = True

    def _finish_plan(self, model_sigmas: List[Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_uncond(self) -> None:
        """Raise ValueError unless the run can give every pass the unconditional x0 estimate (CFG++ rows)."""
        raise ValueError("this sampler (CFG++) needs classifier-free guidance: it weighs the unconditional x0 "
                         f"estimate in every step, which a {type(self).__name__} does not provide")

    def uncond_arg(self, k: int) -> Any:
        """``fused_step``'s ``uncond=`` for evaluation ``k``: None unless its row uses the unconditional estimate."""
        return None

    def pass_index(self, j: int) -> int:
        return len(self._rows) + j

    # --- the loop (device) -------------------------------------------------------------------
    def steps(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def start(self, x: torch.Tensor) -> torch.Tensor:
        """Before the first step (fused churn: the churn noise of step 0)."""
        return x

    def churn(self, x: torch.Tensor, i: int, pre: Optional[int]) -> torch.Tensor:
        """At the start of step ``i``: the churn pass ``pre`` (a :meth:`churn_plan` entry) when it is active."""
        return x

    def eval(self, x: torch.Tensor, k: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self, x: torch.Tensor, raw: torch.Tensor, k: int, *, x_eval: Optional[torch.Tensor] = None,
             history: Sequence[torch.Tensor] = (), aux: bool = False, x0: bool = False, draw: Any = None):
        """The one fused pass of evaluation ``k``.

        Returns the new sample; with ``aux`` also the row's auxiliary output, with ``x0`` also the x0 estimate of
        this evaluation as a history entry (the model output itself when that is the estimate, else written by
        the pass). ``draw`` names the noise a face that draws it outside the kernel takes for this pass.
        """
        identity = x0 and self._x0_is_raw(raw, x, k)
        out = self._launch(x, raw, k, x_eval, tuple(history), aux or (x0 and not identity), draw)
        if identity:
            return out, raw
        return out

    def _x0_is_raw(self, raw: torch.Tensor, x: torch.Tensor, k: int) -> bool:
        return self._raw_is_x0[k] and raw.dtype == x.dtype

    def _launch(self, x, raw, k, x_eval, history, aux, draw):  # pragma: no cover - abstract
        raise NotImplementedError

    def report(self, i: int, x: torch.Tensor, raw: torch.Tensor, k: int, sigma_hat: Any = None) -> None:
        """The callback of step ``i`` (before its step), with evaluation ``k``'s x0 estimate."""


def _sigma_hint(ndim: int) -> str:
    shape = ", ".join(["-1"] + ["1"] * (ndim - 1))
    return ("fastdiff calls denoiser(x, sigma) with sigma a (batch,) tensor: reshape it against x with "
            f"sigma.view(-1, *[1] * (x.dim() - 1)) (here sigma.view({shape}))")


def _supports_flow(den: Any) -> bool:
    if not isinstance(den, Denoiser):
        return True
    if hasattr(den, "flow_conversion"):
        return True
    inner = getattr(den, "inner", None)
    return den.doubles_batch and (not isinstance(inner, Denoiser) or hasattr(inner, "flow_conversion"))


class SamplerContext(Run):
    """``fastdiff.sample``'s run: host-float sigmas, a fused denoiser conversion and guidance, Philox noise.

    Noise streams: ``k + 1`` for the pass after model evaluation ``k``, :data:`PRE_CHURN_STREAM` for the churn
    noise before the first evaluation.
    """

    fuses_churn = True
    heun_keeps_derivative = True

    def __init__(self, denoiser: Callable, x: torch.Tensor, sigmas: List[float], *, seed: int,
                 row_ids: Optional[torch.Tensor], guidance_scale: Optional[float], backend: str,
                 callback: Optional[Callable], progress: bool, clip: Optional[float],
                 model_kwargs: Dict[str, Any], space: str = "ve") -> None:
        super().__init__(x, sigmas, backend)
        self.denoiser, self.seed, self.row_ids = denoiser, seed, row_ids
        self.callback, self.progress, self.clip = callback, progress, clip
        self.model_kwargs, self.space = model_kwargs, space
        self.sigma_dtype = self.table_dtype
        self.guided = bool(getattr(denoiser, "doubles_batch", False))
        self.guidance_scale = 0.0 if not self.guided else float(
            denoiser.scale if guidance_scale is None else guidance_scale)
        self._checked = False
        self.flow_sigmas = space == "flow"

    # --- planning ----------------------------------------------------------------------------
    def _inner(self) -> Any:
        den = self.denoiser
        return den.inner if den.doubles_batch else den

    def conversion(self, sigma: float) -> Tuple[float, float]:
        den = self.denoiser
        if not isinstance(den, Denoiser):
            return 0.0, 1.0
        if self.space == "flow":
            inner = self._inner()
            return inner.flow_conversion(sigma) if isinstance(inner, Denoiser) else (0.0, 1.0)
        return den.conversion(sigma)

    def guidance(self) -> float:
        return self.guidance_scale

    def _timesteps(self, sig: torch.Tensor) -> Optional[torch.Tensor]:
        den = self.denoiser
        if not isinstance(den, Denoiser):
            return None
        if self.space == "flow":
            inner = self._inner()
            return inner.flow_timesteps(sig) if isinstance(inner, Denoiser) else None
        return den.timesteps(sig)

    def plan(self) -> None:
        if not self._planned:
            # the churn noise of step 0 (when active) is the pass after the evaluation rows
            self.pass_row(in_x=0.0, in_m=0.0, out_x=1.0, out_noise=self._churn[0] if self._churn else 0.0)
        super().plan()

    def _finish_plan(self, model_sigmas: List[float]) -> None:
        sig = torch.tensor([float(s) for s in model_sigmas] or [0.0], dtype=torch.float64)
        ts = self._timesteps(sig)
        self.sig_dev = sig.to(self.sigma_dtype).to(self.device)
        self.t_dev = None if ts is None else ts.to(self.sigma_dtype).to(self.device)
        self.noisy = [c["out_noise"] != 0.0 for c in self.coefs]
        # per evaluation, made once per run: the (batch,) sigma / timestep views the model gets and the launch's
        # keyword arguments (the loop then only looks them up: ~2 us less host work per step, measured with
        # benchmarks/host_per_step.py)
        n = len(model_sigmas)
        self._sig_views = [self.sig_dev[k].expand(self.batch) for k in range(n)]
        self._t_views = [None] * n if self.t_dev is None else [self.t_dev[k].expand(self.batch) for k in range(n)]
        self._launch_kw = [dict(coef_row=k, guidance=self.guided, clip=self.clip,
                                seed=self.seed if self.noisy[k] else None, stream=k + 1, row_ids=self.row_ids,
                                backend=self.backend, uncond=self.uncond_arg(k)) for k in range(len(self.coefs))]

    # --- the loop ------------------------------------------------------------------------------
    def steps(self):
        """``range(n)``, with a tqdm bar when ``progress=True``."""
        if self.progress:
            from tqdm.auto import trange

            return trange(self.n)
        return range(self.n)

    def start(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pass_index(0)
        if not self.noisy[pre]:
            return x
        return fused_step(x, x, self.table, coef_row=pre, seed=self.seed, stream=PRE_CHURN_STREAM,
                          row_ids=self.row_ids, backend=self.backend)

    def eval(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Raw model output for evaluation ``k`` at the planned noise level (no host sync)."""
        sig, t = self._sig_views[k], self._t_views[k]
        den, kw = self.denoiser, self.model_kwargs
        if isinstance(den, Denoiser):
            raw = den.flow_raw(x, sig, t, **kw) if self.space == "flow" else den.raw(x, sig, t, **kw)
        elif self._checked:
            raw = den(x, sig, **kw)
        else:
            try:
                raw = den(x, sig, **kw)
            except RuntimeError as err:
                # most likely sigma used as a scalar against x; the error is re-raised as it is, with a note
                text = str(err)
                if hasattr(err, "add_note") and any(w in text for w in ("size of tensor", "shape", "broadcast")):
                    err.add_note(_sigma_hint(len(self.x_shape)))
                raise
        if not self._checked:
            want = ((2 * self.batch,) if self.guided else (self.batch,)) + self.x_shape[1:]
            if not isinstance(raw, torch.Tensor):
                raise TypeError(f"the denoiser must return a tensor, got {type(raw).__name__}")
            if tuple(raw.shape) != want:
                what = " ([uncond; cond] halves)" if self.guided else ""
                hint = "" if isinstance(den, Denoiser) else "; " + _sigma_hint(len(self.x_shape))
                raise ValueError(f"the denoiser returned shape {tuple(raw.shape)}; expected {want}{what}{hint}")
            if raw.dtype not in FLOAT_DTYPES or raw.device != self.device:
                raise TypeError(f"the denoiser must return a float tensor on {self.device}, got "
                                f"{raw.dtype} on {raw.device}")
            self._checked = True
        return raw

    def _x0_is_raw(self, raw: torch.Tensor, x: torch.Tensor, k: int) -> bool:
        # a guided output is the doubled batch even at guidance 0: never the x0 estimate itself
        return self.clip is None and not self.guided and super()._x0_is_raw(raw, x, k)

    def check_uncond(self) -> None:
        if not self.guided:
            raise ValueError("this sampler (CFG++) needs classifier-free guidance: pass a CFGDenoiser (it weighs "
                             "the unconditional x0 estimate, the uncond half of the guided call, in every step)")

    def uncond_arg(self, k: int) -> Any:
        """``"halves"`` on CFG++ rows: the pass forms the unconditional x0 estimate from the uncond half."""
        return "halves" if self.uses_uncond[k] else None

    def _launch(self, x, raw, k, x_eval, history, aux, draw):
        return fused_step(x, raw, self.table, x_eval=x_eval, history=history, write_aux=aux, **self._launch_kw[k])

    def report(self, i: int, x: torch.Tensor, raw: torch.Tensor, k: int, sigma_hat: Any = None) -> None:
        """Call ``callback(dict(x, i, sigma, sigma_hat, denoised))``; the x0 estimate is formed only here."""
        if self.callback is None:
            return
        c = self.coefs[k]
        m = raw
        if self.guided:
            m = raw[: self.batch] + self.guidance_scale * (raw[self.batch:] - raw[: self.batch])
        denoised = c["in_x"] * x + c["in_m"] * m
        if self.clip is not None:
            denoised = denoised.clamp(-self.clip, self.clip)
        sigma = float(self.sigmas[i])
        self.callback(dict(x=x, i=i, sigma=sigma, sigma_hat=sigma if sigma_hat is None else float(sigma_hat),
                           denoised=denoised))
