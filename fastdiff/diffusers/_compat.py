"""diffusers' config/scheduler base types when diffusers is installed, small stand-ins otherwise.

diffusers is an optional extra (``fastdiff[compat]``): with it, the schedulers
here subclass diffusers' own ``SchedulerMixin``/``ConfigMixin`` and return its
output types, so pipelines and ``from_config`` round trips treat them as
native. Without it, the stand-ins below give the same surface: ``config``
(a read-only dict with attribute access), ``from_config``, ``save_pretrained``
/ ``from_pretrained`` of a JSON config, ``register_to_config`` and simple
output dataclasses.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import inspect
import json
import os
from typing import Any, Callable, Dict, Optional, Tuple

import torch

__all__ = ["HAS_DIFFUSERS", "ConfigMixin", "SchedulerMixin", "register_to_config", "randn_tensor", "output_class",
           "output_builder", "resolve_output", "make_output", "CONFIG_NAME"]

CONFIG_NAME = "scheduler_config.json"

try:  # pragma: no branch - depends on the install
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput
    from diffusers.utils.torch_utils import randn_tensor

    HAS_DIFFUSERS = True
except ImportError:  # pragma: no cover - exercised only without diffusers
    HAS_DIFFUSERS = False

    class FrozenConfig(dict):
        """A read-only dict whose keys are also attributes (diffusers' ``FrozenDict``)."""

        def __getattr__(self, name: str) -> Any:
            try:
                return self[name]
            except KeyError:
                raise AttributeError(name) from None

        def __setitem__(self, key, value):
            raise TypeError("the config is read-only; use register_to_config")

    def register_to_config(init):
        """Record the arguments of ``__init__`` (defaults filled in) as the object's config."""
        sig = inspect.signature(init)

        @functools.wraps(init)
        def inner(self, *args, **kwargs):
            bound = sig.bind(self, *args, **kwargs)
            bound.apply_defaults()
            cfg = {k: v for k, v in bound.arguments.items() if k != "self"}
            self._internal_dict = FrozenConfig(cfg)
            init(self, *args, **kwargs)

        return inner

    class ConfigMixin:
        """Config handling: ``config``, ``from_config``, ``save_pretrained``, ``from_pretrained``."""

        config_name = CONFIG_NAME

        @property
        def config(self) -> "FrozenConfig":
            return self._internal_dict

        def register_to_config(self, **kwargs) -> None:
            cfg = dict(getattr(self, "_internal_dict", {}))
            cfg.update(kwargs)
            self._internal_dict = FrozenConfig(cfg)

        @classmethod
        def from_config(cls, config=None, return_unused_kwargs: bool = False, **kwargs):
            if config is None:
                config = {}
            if hasattr(config, "config") and not isinstance(config, dict):
                config = config.config
            if not isinstance(config, dict):
                raise TypeError(f"config must be a dict or an object with a .config, got {type(config).__name__}")
            params = inspect.signature(cls.__init__).parameters
            merged = {k: v for k, v in dict(config).items() if not k.startswith("_")}
            merged.update(kwargs)
            init_kwargs = {k: v for k, v in merged.items() if k in params}
            unused = {k: v for k, v in merged.items() if k not in params}
            obj = cls(**init_kwargs)
            return (obj, unused) if return_unused_kwargs else obj

        def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs) -> None:
            os.makedirs(save_directory, exist_ok=True)
            cfg = {"_class_name": type(self).__name__, **dict(self.config)}
            with open(os.path.join(save_directory, self.config_name), "w", encoding="utf-8") as f:
                json.dump(cfg, f, indent=2, sort_keys=True, default=_jsonable)

        @classmethod
        def load_config(cls, pretrained_model_name_or_path, subfolder: Optional[str] = None, **kwargs) -> dict:
            path = os.fspath(pretrained_model_name_or_path)
            if subfolder:
                path = os.path.join(path, subfolder)
            if os.path.isdir(path):
                path = os.path.join(path, cls.config_name)
            if not os.path.isfile(path):
                raise ValueError(f"pretrained_model_name_or_path must be a directory holding {cls.config_name} "
                                 f"(no downloads without diffusers), got {pretrained_model_name_or_path!r}")
            with open(path, encoding="utf-8") as f:
                return json.load(f)

    class SchedulerMixin:
        """The scheduler half of diffusers' base: ``from_pretrained`` and ``compatibles``."""

        config_name = CONFIG_NAME
        _compatibles: list = []
        has_compatibles = True

        @classmethod
        def from_pretrained(cls, pretrained_model_name_or_path=None, subfolder: Optional[str] = None, **kwargs):
            config = cls.load_config(pretrained_model_name_or_path, subfolder=subfolder)
            return cls.from_config(config, **kwargs)

        @property
        def compatibles(self) -> list:
            get = getattr(type(self), "_get_compatibles", None)  # the drop-ins' (fastdiff's classes only here)
            return get() if get is not None else []

    def _jsonable(v):
        if isinstance(v, torch.Tensor):
            return v.tolist()
        if hasattr(v, "tolist"):
            return v.tolist()
        raise TypeError(f"cannot store {type(v).__name__} in a JSON config")

    class _Output:
        """Tuple-like access (``out[0]``, ``to_tuple()``) over the non-None fields, as diffusers' BaseOutput."""

        def to_tuple(self) -> tuple:
            return tuple(getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None)

        def __getitem__(self, k):
            if isinstance(k, str):
                return getattr(self, k)
            return self.to_tuple()[k]

    @dataclasses.dataclass
    class SchedulerOutput(_Output):
        prev_sample: torch.Tensor

    def randn_tensor(shape, generator=None, device=None, dtype=None, layout=None):
        """diffusers' ``randn_tensor``: the same ``torch.randn`` calls in the same order."""
        if isinstance(device, str):
            device = torch.device(device)
        rand_device = device
        batch_size = shape[0]
        layout = layout or torch.strided
        device = device or torch.device("cpu")
        if generator is not None:
            gen_type = generator.device.type if not isinstance(generator, list) else generator[0].device.type
            if gen_type != device.type and gen_type == "cpu":
                rand_device = "cpu"
            elif gen_type != device.type and gen_type == "cuda":
                raise ValueError(f"Cannot generate a {device} tensor from a generator of type {gen_type}.")
        if isinstance(generator, list) and len(generator) == 1:
            generator = generator[0]
        if isinstance(generator, list):
            shape = (1,) + tuple(shape[1:])
            parts = [torch.randn(shape, generator=generator[i], device=rand_device, dtype=dtype, layout=layout)
                     for i in range(batch_size)]
            return torch.cat(parts, dim=0).to(device)
        return torch.randn(shape, generator=generator, device=rand_device, dtype=dtype, layout=layout).to(device)


def _fallback_output(name: str, second: Optional[str]):
    fields = [("prev_sample", torch.Tensor)]
    if second:
        fields.append((second, Optional[torch.Tensor], dataclasses.field(default=None)))
    return dataclasses.make_dataclass(name, fields, bases=(_Output,))


_OUTPUTS = {
    # name -> (diffusers module, the second field after prev_sample, if any)
    "DDPMSchedulerOutput": ("scheduling_ddpm", "pred_original_sample"),
    "DDIMSchedulerOutput": ("scheduling_ddim", "pred_original_sample"),
    "DDPMParallelSchedulerOutput": ("scheduling_ddpm_parallel", "pred_original_sample"),
    "DDIMParallelSchedulerOutput": ("scheduling_ddim_parallel", "pred_original_sample"),
    "LCMSchedulerOutput": ("scheduling_lcm", "denoised"),
    "TCDSchedulerOutput": ("scheduling_tcd", "pred_noised_sample"),
    "EulerDiscreteSchedulerOutput": ("scheduling_euler_discrete", "pred_original_sample"),
    "EulerAncestralDiscreteSchedulerOutput": ("scheduling_euler_ancestral_discrete", "pred_original_sample"),
    "HeunDiscreteSchedulerOutput": ("scheduling_heun_discrete", "pred_original_sample"),
    "FlowMatchEulerDiscreteSchedulerOutput": ("scheduling_flow_match_euler_discrete", None),
    "CMStochasticIterativeSchedulerOutput": ("scheduling_consistency_models", None),
    "FlowMatchHeunDiscreteSchedulerOutput": ("scheduling_flow_match_heun_discrete", None),
    "SdeVeOutput": ("scheduling_sde_ve", "prev_sample_mean"),
    "UnCLIPSchedulerOutput": ("scheduling_unclip", "pred_original_sample"),
    "FlowMapEulerDiscreteSchedulerOutput": ("scheduling_flow_map_euler_discrete", None),
    "LMSDiscreteSchedulerOutput": ("scheduling_lms_discrete", "pred_original_sample"),
    "KDPM2DiscreteSchedulerOutput": ("scheduling_k_dpm_2_discrete", "pred_original_sample"),
    "KDPM2AncestralDiscreteSchedulerOutput": ("scheduling_k_dpm_2_ancestral_discrete", "pred_original_sample"),
    "EDMEulerSchedulerOutput": ("scheduling_edm_euler", "pred_original_sample"),
    "DPMSolverSDESchedulerOutput": ("scheduling_dpmsolver_sde", "pred_original_sample"),
    "DDPMWuerstchenSchedulerOutput": ("scheduling_ddpm_wuerstchen", None),
    "SchedulerOutput": (None, None),
}


@functools.lru_cache(maxsize=None)
def output_class(name: str):
    """The step output type diffusers' scheduler of the same family returns (a stand-in without diffusers)."""
    module, second = _OUTPUTS[name]
    if module is None:
        return SchedulerOutput
    if HAS_DIFFUSERS:
        import importlib

        try:
            return getattr(importlib.import_module(f"diffusers.schedulers.{module}"), name)
        except ImportError:  # a diffusers module that needs an optional package (torchsde) not installed
            pass
    return _fallback_output(name, second)  # pragma: no cover


@functools.lru_cache(maxsize=None)
def output_builder(name: str):
    """A fast constructor of ``output_class(name)``: same class, same state as ``cls(**fields)``.

    diffusers' ``BaseOutput`` validates its fields in ``__post_init__`` on every construction (several
    microseconds, a visible share of a small step). The builder fills the instance directly -- every field
    as an attribute, the non-None ones also as ordered mapping entries, exactly what ``__init__`` +
    ``__post_init__`` leave for tensor fields -- so the object compares, indexes, pickles and unpacks
    (``to_tuple``) like one built normally.
    """
    cls = output_class(name)
    names = tuple(f.name for f in dataclasses.fields(cls))
    is_mapping = isinstance(cls, type) and issubclass(cls, dict)
    if not is_mapping:  # the stand-in dataclasses are cheap already
        return lambda *values: cls(*values)
    new = cls.__new__
    # the base mapping's own __setitem__/__setattr__, bypassing BaseOutput's overrides (which do both)
    setitem = collections.OrderedDict.__setitem__ if issubclass(cls, collections.OrderedDict) else dict.__setitem__
    setattr_ = object.__setattr__

    if len(names) == 1:  # most outputs: the loop unrolled, the attribute a __dict__ write (421 -> 212 ns)
        (k0,) = names

        def build(v0):
            obj = new(cls)
            obj.__dict__[k0] = v0
            if v0 is not None:
                setitem(obj, k0, v0)
            return obj
    elif len(names) == 2:
        k0, k1 = names

        def build(v0, v1=None):
            obj = new(cls)
            d = obj.__dict__
            d[k0] = v0
            d[k1] = v1
            if v0 is not None:
                setitem(obj, k0, v0)
            if v1 is not None:
                setitem(obj, k1, v1)
            return obj
    else:
        def build(*values):
            obj = new(cls)
            for k, v in zip(names, values):
                setattr_(obj, k, v)
                if v is not None:
                    setitem(obj, k, v)
            return obj

    build.__doc__ = f"Build a {cls.__name__} from positional field values ({', '.join(names)})."
    return build


#: name -> (output class, fast builder), filled by ``resolve_output`` outside any traced region
_RESOLVED: Dict[str, Tuple[type, Callable]] = {}


def resolve_output(name: str) -> None:
    """Look up (and import) the output type ``name`` once, so that ``make_output`` is a dict read.

    The schedulers call this at construction: diffusers' output types live in modules that are slow to
    import, and the import is a call dynamo cannot trace, so it must not happen inside a compiled step.
    """
    if name not in _RESOLVED:
        _RESOLVED[name] = (output_class(name), output_builder(name))


def make_output(name: str, *values):
    """An ``output_class(name)`` instance of the positional field ``values``.

    Eagerly the fast builder; under ``torch.compile`` the class's own constructor, which dynamo traces
    (the builder's direct mapping writes are builtins it cannot).

    Example:
        >>> make_output("SchedulerOutput", torch.zeros(2)).prev_sample
        tensor([0., 0.])
    """
    entry = _RESOLVED.get(name)
    if entry is None:  # first use without a prior resolve (eager callers only)
        resolve_output(name)
        entry = _RESOLVED[name]
    if torch.compiler.is_compiling():
        return entry[0](*values)
    return entry[1](*values)
