"""Drop-in: swap fastdiff's fused DDIM scheduler into a diffusers pipeline (tiny random UNet, CPU, seconds).

Run: python examples/diffusers_dropin.py
"""
import sys

try:
    from diffusers import DDIMPipeline, UNet2DModel
    from diffusers import DDIMScheduler as DiffusersDDIM
except ImportError:
    print("diffusers is not installed (pip install 'fastdiff[compat]'): skipping this example")
    sys.exit(0)

import torch

from fastdiff.diffusers import DDIMScheduler

torch.manual_seed(0)
unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                   block_out_channels=(8, 16), norm_num_groups=4,
                   down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
pipe = DDIMPipeline(unet=unet, scheduler=DiffusersDDIM())
pipe.set_progress_bar_config(disable=True)


def generate():
    gen = torch.Generator().manual_seed(0)
    return pipe(batch_size=2, num_inference_steps=10, generator=gen, output_type="np").images


reference = generate()                                             # diffusers' own scheduler
pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # the one-line swap
images = generate()                                                # each step is now one fused pass

print(f"images {images.shape}, scheduler {type(pipe.scheduler).__module__}.{type(pipe.scheduler).__name__}")
print(f"max |fastdiff - diffusers| = {abs(images - reference).max():.2e}")
assert abs(images - reference).max() < 1e-3
