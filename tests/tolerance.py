"""The tolerance scheme: a kernel's error against float64 is bounded by a small multiple of PyTorch's own
error (the same formula computed in the storage dtype), plus 2 ulp of the storage dtype."""
import torch

EPS = {torch.float32: 2.0**-23, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7, torch.float64: 2.0**-52}


def assert_close_to_reference(name, out, ref_same_dtype, ref64, *, factor=3.0):
    """|out - ref64| <= factor * |ref_same - ref64| + 2 ulp(storage) * max(1, |ref64|), elementwise max.

    Where the exact value overflows the storage dtype, the kernel must saturate to +-inf (or the
    largest finite value) with the right sign; everything else must be finite and within the bound.
    """
    assert out.shape == ref64.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref64.shape)}"
    if out.numel() == 0:
        return 0.0, 0.0
    ref64 = ref64.double()
    big = ref64.abs() > 0.99 * torch.finfo(out.dtype).max
    if big.any():
        o = out.double()[big]
        assert torch.all((o.abs() >= 0.99 * torch.finfo(out.dtype).max) & (o.sign() == ref64[big].sign())), \
            f"{name}: overflowing elements did not saturate with the right sign"
    keep = ~big
    assert torch.isfinite(out[keep]).all(), f"{name}: non-finite values (unwritten poisoned elements?)"
    if not keep.any():
        return 0.0, 0.0
    err = (out.double()[keep] - ref64[keep]).abs().max().item()
    same = ref_same_dtype.double()[keep]
    torch_err = (same - ref64[keep]).abs().nan_to_num(posinf=0.0).max().item()
    scale = max(1.0, ref64[keep].abs().max().item())
    bound = factor * torch_err + 2 * EPS[out.dtype] * scale
    assert err <= bound, f"{name}: kernel error {err:.3e} > bound {bound:.3e} (torch same-dtype error {torch_err:.3e})"
    return err, torch_err


def poisoned_like(t):
    """An output buffer full of NaN so any element the kernel fails to write fails the test."""
    return torch.full_like(t, float("nan"))
