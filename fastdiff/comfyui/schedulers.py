"""ComfyUI's scheduler functions (``simple_scheduler(model_sampling, steps)``, ...) on fastdiff's schedules."""
from __future__ import annotations

__all__: list = []
