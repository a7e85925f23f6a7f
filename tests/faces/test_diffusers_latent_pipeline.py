"""A latent-diffusion pipeline (diffusers' LDMPipeline: VQ autoencoder + UNet in latent space) built from a tiny
random config, no downloads: the same latents with our schedulers swapped in.

What is compared: the latents the denoising loop hands to the VQ decoder, not the images. The decoder quantises
to the nearest codebook entry, a discontinuity: a last-bit difference in a latent that sits near a boundary
between two codes picks the other code and changes the pixel by ~1e-2, so images agree only by luck of the
rounding (they did on one CPU and not on another, and not after other tests changed the thread count).
The latents are bounded against a float64 run of the same pipeline with diffusers' scheduler run in float64
(``peer_float64``): fastdiff may be at most FACTOR times further from it than diffusers' float32 run is, plus
float32 rounding of the UNet and scheduler steps.
"""
import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="the compat extra (diffusers) is not installed")
import fastdiff.diffusers as fdd  # noqa: E402
from peer_float64 import assert_parity, float64_pipeline, float64_scheduler  # noqa: E402

STEPS = 6


def tiny_ldm(scheduler):
    torch.manual_seed(0)
    vqvae = diffusers.VQModel(in_channels=3, out_channels=3, latent_channels=4, num_vq_embeddings=16,
                              block_out_channels=(8,), layers_per_block=1, norm_num_groups=4,
                              down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",)).eval()
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                 layers_per_block=1, norm_num_groups=8,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D")).eval()
    return diffusers.LDMPipeline(vqvae=vqvae, unet=unet, scheduler=scheduler)


def latents_and_images(pipe):
    """The latents given to the VQ decoder and the images, from a fixed generator."""
    seen = []
    decode = pipe.vqvae.decode

    def recording_decode(latents, *args, **kwargs):
        seen.append(latents.clone())
        return decode(latents, *args, **kwargs)

    pipe.vqvae.decode = recording_decode
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        out = pipe(batch_size=2, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(3),
                   output_type="np")
    assert len(seen) == 1
    return seen[0], torch.from_numpy(out.images)


@pytest.mark.parametrize("name,config", [
    ("DDIMScheduler", {}),
    ("EulerDiscreteScheduler", {}),  # scale_model_input divides by sqrt(sigma^2 + 1): checked through the pipeline
    ("DPMSolverMultistepScheduler", {"solver_order": 2}),
])
def test_ldm_pipeline_same_latents_with_our_scheduler(name, config, monkeypatch):
    peer, peer_images = latents_and_images(tiny_ldm(getattr(diffusers, name)(**config)))
    ours, ours_images = latents_and_images(tiny_ldm(getattr(fdd, name)(**config)))
    exact, _ = latents_and_images(float64_pipeline(monkeypatch, tiny_ldm(float64_scheduler(diffusers, name, config))))
    assert exact.dtype == torch.float64 and ours.dtype == peer.dtype == torch.float32
    assert peer_images.shape == ours_images.shape == (2, 8, 8, 3)
    assert peer_images.std() > 0 and ours_images.std() > 0
    assert peer.std() > 0.1  # the latents carry signal: a no-op loop would not pass for a match
    # each of the STEPS steps runs the UNet (dozens of float32 roundings in series) and one scheduler step
    assert_parity(f"{name} latents", ours, peer, exact, STEPS)
