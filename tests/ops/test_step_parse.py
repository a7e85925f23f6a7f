"""fused_step's one parse (``fastdiff.ops.step.parse``): every rule once, the order the rules are applied in, what
the quick tests leave to the full checks, and the record each path receives.

The parse accepts the common case with quick tests and runs an argument's full check only when its quick test
fails, so the cases here pair each rule with inputs on both sides of the quick test: a plain tensor and a tensor
subclass, an int and an int subclass, a tuple of history tensors and a generator of them.
"""
import enum
import itertools

import pytest
import torch

import fastdiff
from fastdiff.ops.backend import triton_available
from fastdiff.ops.records import StepArgs
from fastdiff.ops.step.parse import parse_step

X = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
M = torch.randn(2, 3, generator=torch.Generator().manual_seed(1))
C = fastdiff.step_coefs(in_x=[0.2, 0.3], in_m=0.9, out_x=0.8, out_d=0.15, out_h=[0.05], out_noise=0.1, aux_x=0.3)
META = torch.device("meta")

# Each rule once, in the order the parse applies it: (id, bad arguments, exception type, message fragment).
RULES = [
    ("x", {"x": X.long()}, TypeError, "x must be a float32"),
    ("x-0d", {"x": torch.tensor(1.0)}, ValueError, "x must have a batch dimension"),
    ("model_output-type", {"model_output": M.int()}, TypeError, "model_output must be a float32"),
    ("model_output-device", {"model_output": M.to(META)}, ValueError, "model_output is on meta"),
    ("model_output-shape", {"model_output": M[:1]}, ValueError, "model_output must have shape (2, 3)"),
    ("coefs-shape", {"coefs": C[:, :12]}, ValueError, "coefs must be a (R, 15) tensor"),
    ("coefs-dtype", {"coefs": C.long()}, TypeError, "coefs must be a float table"),
    ("coefs-device", {"coefs": C.to(META)}, ValueError, "coefs is on meta"),
    ("x_eval", {"x_eval": X[:1]}, ValueError, "x_eval must have shape"),
    ("history-tensor", {"history": X}, TypeError, "history must be a list or tuple"),
    ("history-length", {"history": [X] * 4}, ValueError, "history takes at most 3"),
    ("history-item", {"history": [X, X.long()]}, TypeError, "history[1]"),
    ("coef_row-type", {"coef_row": 0.5}, TypeError, "coef_row must be an int"),
    ("coef_index", {"coef_index": torch.zeros(2)}, TypeError, "coef_index must be an integer tensor"),
    ("coef_row-range", {"coef_row": 2}, ValueError, "coef_row must be in [0, 2)"),
    ("clip-type", {"clip": "1"}, TypeError, "clip must be a positive float"),
    ("clip-value", {"clip": 0.0}, ValueError, "clip must be a positive float"),
    ("noise", {"noise": X[:, :1]}, ValueError, "noise must have shape"),
    ("noise-and-seed", {"noise": X, "seed": 1}, ValueError, "pass either seed"),
    ("seed", {"seed": -1}, ValueError, "seed must be in [0, 2**63)"),
    ("stream", {"stream": 2**32}, ValueError, "stream must be an int in [0, 2**32)"),
    ("row_ids", {"row_ids": torch.arange(2, dtype=torch.int32)}, ValueError, "row_ids must be an int64 tensor"),
    ("out", {"out": torch.empty(3, 2).t()}, ValueError, "out must be contiguous"),
    ("aux_out", {"aux_out": torch.empty(2, 4)}, ValueError, "aux_out must have shape"),
    ("backend", {"backend": "cuda"}, ValueError, "backend must be one of"),
]
# pairs that cannot both be wrong: the later one is checked only when the earlier one holds a value
_EXCLUSIVE = {("x", "x-0d"), ("model_output-type", "model_output-device"), ("coefs-shape", "coefs-dtype"),
              ("coefs-shape", "coefs-device"), ("coefs-dtype", "coefs-device"), ("history-tensor", "history-length"),
              ("history-tensor", "history-item"), ("history-length", "history-item"),
              ("coef_row-type", "coef_row-range"), ("coef_index", "coef_row-range"), ("clip-type", "clip-value"),
              ("noise", "noise-and-seed"), ("noise-and-seed", "seed")}


def _call(**kw):
    args = {"x": X, "model_output": M, "coefs": C}
    args.update(kw)
    return fastdiff.fused_step(args.pop("x"), args.pop("model_output"), args.pop("coefs"), **args)


@pytest.mark.parametrize("rule, bad, exc, fragment", RULES, ids=[r[0] for r in RULES])
def test_each_rule(rule, bad, exc, fragment):
    with pytest.raises(exc) as info:
        _call(**bad)
    assert fragment in str(info.value)


@pytest.mark.parametrize("first, second", [
    (a, b) for a, b in itertools.combinations(RULES, 2)
    if (a[0], b[0]) not in _EXCLUSIVE and not set(a[1]) & set(b[1])
], ids=lambda r: r[0])
def test_rules_apply_in_order(first, second):
    """With two bad arguments the earlier rule's error is raised (the order is part of the behaviour)."""
    with pytest.raises(first[2]) as info:
        _call(**first[1], **second[1])
    assert first[3] in str(info.value)


# ---- what the quick tests leave to the full checks is still accepted, with the same result ----------------------

class _Sub(torch.Tensor):
    pass


class _Row(enum.IntEnum):
    ONE = 1


def _kernel_backends():
    return ["torch", "reference"] + (["triton"] if triton_available() and fastdiff.ops.backend.interpret_mode()
                                     else [])


@pytest.mark.parametrize("backend", _kernel_backends())
@pytest.mark.parametrize("case", ["subclass_x", "subclass_history", "int_subclass_row", "generator_history",
                                  "float64_table", "noncontiguous", "int_clip", "list_history"])
def test_inputs_past_the_quick_tests_match_plain_inputs(case, backend):
    h = torch.randn(2, 3, generator=torch.Generator().manual_seed(2))
    plain = dict(history=(h,), coef_row=1, write_aux=True, seed=5, stream=3, backend=backend)
    kw = dict(plain)
    x, m = X, M
    if case == "subclass_x":
        x, m = X.as_subclass(_Sub), M.as_subclass(_Sub)
    elif case == "subclass_history":
        kw["history"] = (h.as_subclass(_Sub),)
    elif case == "int_subclass_row":
        kw["coef_row"] = _Row.ONE
    elif case == "generator_history":
        kw["history"] = (t for t in (h,))
    elif case == "list_history":
        kw["history"] = [h]
    elif case == "float64_table" and backend == "triton":
        kw["coefs"] = C.double()
    elif case == "noncontiguous":
        x = X.t().contiguous().t()
        assert not x.is_contiguous()
    elif case == "int_clip":
        plain["clip"], kw["clip"] = 2.0, 2
    want = _call(**plain)
    got = _call(x=x, model_output=m, **kw)
    for w, g in zip(want, got):
        assert torch.equal(w.as_subclass(torch.Tensor), g.as_subclass(torch.Tensor))


# ---- the record --------------------------------------------------------------------------------------------------

def _parse(x=X, model_output=M, coefs=C, x_eval=None, history=(), coef_index=None, coef_row=0, guidance=False,
           clip=None, seed=None, stream=0, row_ids=None, noise=None, out=None, aux_out=None, write_aux=False,
           backend="torch"):
    return parse_step(x, model_output, coefs, x_eval, history, coef_index, coef_row, guidance, clip, seed, stream,
                      row_ids, noise, out, aux_out, write_aux, backend)


def test_the_torch_paths_get_the_arguments_as_given():
    h = X.t().contiguous().t()
    path, want_aux, plain, a = _parse(history=[h], clip=2, seed=2**40 + 7, aux_out=torch.empty(2, 3))
    assert path == "cpu" and want_aux and isinstance(a, StepArgs)
    assert a.x is X and a.model_output is M and a.coefs is C and a.h0 is h and a.h1 is None and a.n_hist == 1
    assert a.out is None and a.clip == 2 and type(a.clip) is int
    assert a.history == (h,) and a.noise_mode == 1 and a.seed == 2**40 + 7
    assert _parse(backend="reference")[0] == "reference"
    assert _parse(coef_index=torch.tensor([0, 1]))[0] == "cpu"   # per-sample rows: host rows too
    assert _parse(noise=X)[3].noise_mode == 2 and _parse(noise=X)[3].seed is None


class _Marked(torch.Tensor):
    pass


@pytest.mark.parametrize("arg", ["x", "model_output", "coefs", "history", "noise", "out", "coef_index", "row_ids"])
def test_plain_is_cleared_by_any_tensor_subclass(arg):
    """``plain`` lets the launcher skip its class checks, so a subclass in any tensor argument must clear it."""
    assert _parse()[2] and _parse(history=[X], noise=X, out=torch.empty(2, 3), coef_index=torch.tensor([0, 0]),
                                  row_ids=torch.tensor([4, 5]))[2]
    given = {"x": X, "model_output": M, "coefs": C, "history": X, "noise": X, "out": torch.empty(2, 3),
             "coef_index": torch.tensor([0, 0]), "row_ids": torch.tensor([4, 5])}[arg].as_subclass(_Marked)
    assert not _parse(**{arg: [given] if arg == "history" else given})[2]


@pytest.mark.skipif(not (triton_available() and fastdiff.ops.backend.interpret_mode()),
                    reason="the kernel path on CPU needs TRITON_INTERPRET=1")
def test_the_kernel_path_gets_contiguous_tensors_a_float32_table_and_its_outputs():
    x = X.t().contiguous().t()
    h = X.t().contiguous().t()
    path, want_aux, plain, a = _parse(x=x, history=(h,), coefs=C.double(), clip=2, write_aux=True, backend="triton")
    assert path == "triton" and want_aux
    assert a.x.is_contiguous() and torch.equal(a.x, x) and a.h0.is_contiguous() and torch.equal(a.h0, h)
    assert a.coefs.dtype == torch.float32 and a.coefs.is_contiguous()
    assert a.out.shape == x.shape and a.out.is_contiguous() and a.aux_out.shape == x.shape
    assert a.clip == 2.0 and type(a.clip) is float
    same = _parse(backend="triton")[3]
    assert same.x is X and same.coefs is C and same.aux_out is None   # already right: nothing copied
