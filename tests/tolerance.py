"""The tolerance scheme: a kernel's error against float64 is bounded by a small
multiple of PyTorch's own error (the same formula computed in the storage dtype)."""
import torch

EPS = {torch.float32: 2.0**-23, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7, torch.float64: 2.0**-52}


def assert_close_to_reference(name, out, ref_same_dtype, ref64, *, factor=3.0):
    """|out - ref64| <= factor * |ref_same - ref64| + 2 ulp(storage) * max(1, |ref64|), elementwise max."""
    assert out.shape == ref64.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref64.shape)}"
    assert torch.isfinite(out).all(), f"{name}: non-finite values (unwritten poisoned elements?)"
    ref64 = ref64.double()
    err = (out.double() - ref64).abs().max().item() if out.numel() else 0.0
    torch_err = (ref_same_dtype.double() - ref64).abs().max().item() if out.numel() else 0.0
    scale = max(1.0, ref64.abs().max().item() if out.numel() else 1.0)
    bound = factor * torch_err + 2 * EPS[out.dtype] * scale
    assert err <= bound, f"{name}: kernel error {err:.3e} > bound {bound:.3e} (torch same-dtype error {torch_err:.3e})"
    return err, torch_err


def poisoned_like(t):
    """An output buffer full of NaN so any element the kernel fails to write fails the test."""
    return torch.full_like(t, float("nan"))
