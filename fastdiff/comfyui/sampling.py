"""ComfyUI's ``sample_<name>`` functions (``model, x, sigmas, extra_args=None, callback=None, disable=None, ...``)."""
from __future__ import annotations

__all__: list = []
