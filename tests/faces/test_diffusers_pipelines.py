"""The denoising loops of diffusers' default-scheduler pipeline families, around diffusers' own networks built
from tiny random configs (no downloads), with diffusers' scheduler and with fastdiff's swapped in.

diffusers' StableDiffusion / SD3 / DeepFloyd-IF pipeline classes need ``transformers``' text encoders, which the
test extra does not install; the loops below are those pipelines' loops as diffusers writes them (classifier-free
guidance on a doubled batch, ``scale_model_input``, the model, the guidance combination, ``step`` with the
pipeline's generator), on fixed random prompt embeddings in place of the text encoder's output:

* SD-style: ``UNet2DConditionModel`` (cross-attention) with CFG, under SD 1.x's scheduler config (PNDM, its
  default) and the schedulers users switch it to;
* flow matching: ``SD3Transformer2DModel`` with CFG, under FlowMatchEuler (SD3 / Flux), UniPC with flow sigmas
  (Wan's config) and DPM-Solver++ with flow sigmas (Sana's config);
* IF-style: a pixel ``UNet2DConditionModel`` predicting noise and a learned variance (``out_channels = 2 * C``),
  the DDPM step with dynamic thresholding and ``learned_range`` variance, noise from the pipeline's generator.

Each final sample is bounded against the same loop run in float64 (networks and diffusers' scheduler;
``peer_float64``): fastdiff may be at most FACTOR times further from it than diffusers' float32 run, plus float32
rounding per step. LCM's loop is in ``test_diffusers_compat.py``.
"""
import inspect

import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="the compat extra (diffusers) is not installed")
import fastdiff.diffusers as fdd  # noqa: E402
from peer_float64 import assert_parity, float64_scheduler  # noqa: E402

SD1 = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
           set_alpha_to_one=False, skip_prk_steps=True, clip_sample=False)


def _embeddings(batch: int, tokens: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2 * batch, tokens, dim, generator=g)  # [uncond; cond], as the pipelines concatenate


def _config(name: str, config: dict) -> dict:
    """``config`` restricted to the keys diffusers' ``name`` takes (a pipeline config's other keys are ignored by
    ``from_config``; the float64 copy is built from the keyword arguments directly)."""
    params = inspect.signature(getattr(diffusers, name).__init__).parameters
    return {k: v for k, v in config.items() if k in params}


def _run_loop(sched, net, call, latents, cond, steps, guidance, generator_seed, combine, model_kwargs):
    sched.set_timesteps(steps)
    x = latents * getattr(sched, "init_noise_sigma", 1.0)
    g = torch.Generator().manual_seed(generator_seed)
    with torch.no_grad():
        for t in sched.timesteps:
            inp = torch.cat([x] * 2)
            if hasattr(sched, "scale_model_input"):
                inp = sched.scale_model_input(inp, t)
            out = call(net, inp, t, cond, **model_kwargs)
            pred = combine(out, guidance)
            kw = {"generator": g} if "generator" in inspect.signature(sched.step).parameters else {}
            x = sched.step(pred, t, x, **kw).prev_sample
    return x


def _cfg(out: torch.Tensor, scale: float) -> torch.Tensor:
    u, c = out.chunk(2)
    return u + scale * (c - u)


def _three_runs(name, config, net, call, shape, cond, steps, guidance, combine, model_kwargs=None, seed=0):
    """(fastdiff, diffusers float32, diffusers float64) final samples of the loop; ``call(net, inp, t, cond,
    **model_kwargs)`` is the model output of the network ``net`` (cast to float64 for the last run)."""
    model_kwargs = model_kwargs or {}
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    cfg = _config(name, config)
    ours = _run_loop(getattr(fdd, name).from_config(cfg), net, call, latents, cond, steps, guidance, seed + 1,
                     combine, model_kwargs)
    peer = _run_loop(getattr(diffusers, name).from_config(cfg), net, call, latents, cond, steps, guidance, seed + 1,
                     combine, model_kwargs)
    try:
        exact = _run_loop(float64_scheduler(diffusers, name, cfg), net.double(), call, latents.double(), cond.double(),
                          steps, guidance, seed + 1, combine,
                          {k: v.double() if torch.is_tensor(v) else v for k, v in model_kwargs.items()})
    finally:
        net.float()
    return ours, peer, exact


# ---------------------------------------------------------------- SD-style: cross-attention UNet with CFG
def _cross_attn_unet(in_channels: int, out_channels: int):
    """A tiny random UNet2DConditionModel (cross-attention on 16-wide prompt embeddings), SD's and IF's network."""
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=in_channels, out_channels=out_channels, layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=4).eval()


def _unet_call(unet, inp, t, cond):
    return unet(inp, t, encoder_hidden_states=cond).sample


@pytest.mark.parametrize("name,extra", [
    ("PNDMScheduler", {}),  # SD 1.x's default
    ("DDIMScheduler", {}),
    ("EulerDiscreteScheduler", {}),
    ("EulerAncestralDiscreteScheduler", {}),  # noise from the pipeline's generator
    ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),  # "DPM++ 2M Karras"
    ("UniPCMultistepScheduler", {}),
])
def test_sd_style_cfg_loop(name, extra):
    steps = 6
    ours, peer, exact = _three_runs(name, {**SD1, **extra}, _cross_attn_unet(4, 4), _unet_call, (2, 4, 8, 8),
                                    _embeddings(2, 5, 16, seed=7), steps, 7.5, _cfg)
    assert peer.std() > 0.05 and torch.isfinite(peer).all()
    assert_parity(f"SD-style loop with {name}", ours, peer, exact, steps)


# ---------------------------------------------------------------- flow matching: SD3 transformer with CFG
def _flow_model():
    torch.manual_seed(0)
    net = diffusers.SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=8, out_channels=4,
        pos_embed_max_size=8).eval()
    return net


def _transformer_call(net, inp, t, cond, pooled):
    return net(hidden_states=inp, timestep=t.expand(inp.shape[0]), encoder_hidden_states=cond,
               pooled_projections=pooled).sample


@pytest.mark.parametrize("name,config", [
    ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}),  # SD3 / Flux
    ("UniPCMultistepScheduler", {"prediction_type": "flow_prediction", "use_flow_sigmas": True,
                                 "flow_shift": 3.0}),  # Wan 2.1
    ("DPMSolverMultistepScheduler", {"prediction_type": "flow_prediction", "use_flow_sigmas": True,
                                     "flow_shift": 3.0, "algorithm_type": "dpmsolver++"}),  # Sana
])
def test_flow_matching_transformer_cfg_loop(name, config):
    steps = 6
    pooled = torch.randn(4, 8, generator=torch.Generator().manual_seed(5))
    ours, peer, exact = _three_runs(name, config, _flow_model(), _transformer_call, (2, 4, 8, 8),
                                    _embeddings(2, 3, 16, seed=9), steps, 4.0, _cfg, {"pooled": pooled})
    assert peer.std() > 0.05 and torch.isfinite(peer).all()
    assert_parity(f"flow-matching loop with {name}", ours, peer, exact, steps)


# ---------------------------------------------------------------- IF-style: learned variance + thresholding

def _if_combine(out: torch.Tensor, scale: float) -> torch.Tensor:
    """IF's guidance: on the noise channels only; the learned variance is the conditional half's."""
    u, c = out.chunk(2)
    u_eps, _ = u.split(3, dim=1)
    c_eps, var = c.split(3, dim=1)
    return torch.cat([u_eps + scale * (c_eps - u_eps), var], dim=1)


IF_CONFIG = dict(beta_schedule="squaredcos_cap_v2", variance_type="learned_range", thresholding=True,
                 dynamic_thresholding_ratio=0.95, sample_max_value=1.5, clip_sample=True, prediction_type="epsilon")


def test_if_style_thresholding_learned_variance_loop():
    steps = 8
    # the IF network predicts the noise and a learned variance: out_channels = 2 * in_channels
    ours, peer, exact = _three_runs("DDPMScheduler", IF_CONFIG, _cross_attn_unet(3, 6), _unet_call, (2, 3, 8, 8),
                                    _embeddings(2, 4, 16, seed=3), steps, 7.0, _if_combine)
    assert peer.std() > 0.05 and torch.isfinite(peer).all()
    assert_parity("IF-style loop with DDPMScheduler", ours, peer, exact, steps)
