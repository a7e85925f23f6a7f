"""A latent-diffusion pipeline (diffusers' LDMPipeline: VQ autoencoder + UNet in latent space) built from a tiny
random config, no downloads: the images are the same with our schedulers swapped in."""
import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="the compat extra (diffusers) is not installed")
import fastdiff.diffusers as fdd  # noqa: E402


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


@pytest.mark.parametrize("name,config", [
    ("DDIMScheduler", {}),
    ("EulerDiscreteScheduler", {}),  # scale_model_input divides by sqrt(sigma^2 + 1): checked through the pipeline
    ("DPMSolverMultistepScheduler", {"solver_order": 2}),
])
def test_ldm_pipeline_same_images_with_our_scheduler(name, config):
    images = []
    for module in (diffusers, fdd):
        pipe = tiny_ldm(getattr(module, name)(**config))
        pipe.set_progress_bar_config(disable=True)
        with torch.no_grad():
            out = pipe(batch_size=2, num_inference_steps=6, generator=torch.Generator().manual_seed(3),
                       output_type="np")
        images.append(torch.from_numpy(out.images))
    assert images[0].shape == (2, 8, 8, 3)
    assert images[0].std() > 0
    torch.testing.assert_close(images[1], images[0], rtol=0, atol=1e-4)
