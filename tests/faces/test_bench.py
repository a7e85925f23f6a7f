"""Fast tests of the benchmark/profiling harness (fastdiff.bench, fastdiff.cli_bench)."""
import argparse
import importlib.util
import json
import math
import sys
import time
import types

import pytest
import torch

import fastdiff
from fastdiff import bench, cli_bench

SMALL = ["2x4x8x8"]


def _run(**kw):
    kw.setdefault("device", "cpu")
    kw.setdefault("sizes", SMALL)
    kw.setdefault("dtypes", ["fp32"])
    kw.setdefault("providers", ["fastdiff", "eager"])
    kw.setdefault("quick", True)
    kw.setdefault("copy_bandwidth", {"gbps": 10.0, "bytes": 1.0, "seconds": 1.0})
    return bench.run_suite(**kw)


# ---- byte model -----------------------------------------------------------------------------------

@pytest.mark.parametrize("op, units", [
    ("add_noise", 3),        # x0, noise -> x_t
    ("encode_v", 3),         # x0 -> x_t, v (noise made in-kernel)
    ("step_ddim", 3),        # x, eps -> out
    ("step_cfg", 4),         # x, [uncond; cond] (2N) -> out
    ("step_dpmpp2m", 5),     # x, eps, hist -> out, x0
    ("step_ancestral", 3),   # x, eps -> out (noise in-kernel)
    ("langevin", 3),         # x, grad -> out (noise in-kernel)
    ("underdamped", 5),      # x, v, grad -> x_out, v_out (noise in-kernel)
    ("hmc_leapfrog", 5),     # x, p, grad -> x, p
])
@pytest.mark.parametrize("dtype, size", [(torch.float32, 4), (torch.bfloat16, 2), (torch.float16, 2)])
def test_byte_counts(op, units, dtype, size):
    n = 16 * 4 * 64 * 64
    assert bench.CASES[op].bytes_moved(n, dtype) == units * n * size
    assert f"= {units} x N x itemsize" in bench.CASES[op].formula()


@pytest.mark.parametrize("op, units", [
    ("dropin_ddim", 4),        # x, eps -> prev_sample, pred_original_sample
    ("dropin_euler", 4),       # x, eps -> prev_sample, pred_original_sample
    ("dropin_dpmpp2m", 5),     # x, eps, history -> prev_sample, x0 (the next step's history)
    ("dropin_deis", 5),        # x, eps, history -> prev_sample, noise estimate (the next step's history)
    ("dropin_flow_euler", 3),  # x, velocity -> prev_sample
    ("dropin_edm_euler", 4),   # x, model output -> prev_sample, pred_original_sample
    ("dropin_ddpm", 5),        # x, eps, the generator's noise -> prev_sample, pred_original_sample
    ("dropin_lcm", 5),         # x, model output, the generator's noise -> prev_sample, denoised
    # multistep: the previous steps' estimates are read (history), the new one written (kept)
    ("dropin_unipc", 5),       # x, eps, previous x0 -> prev_sample, x0
    ("dropin_dpm_single", 6),  # x, eps, the pair's first x0 and first sample -> prev_sample, x0
    ("dropin_lms", 7),         # x, eps, three previous derivatives -> prev_sample, pred_original_sample
    ("dropin_ipndm", 7),       # x, eps, three previous derivatives -> prev_sample, this derivative (kept)
    ("dropin_edm_dpm", 5),
    ("dropin_dpm_inverse", 5),
    ("dropin_sa", 7),          # x, eps, previous x0, previous sample (corrector), noise -> prev_sample, x0
    ("dropin_cosine_dpm", 6),  # x, eps, previous x0, Brownian noise -> prev_sample, x0
    ("dropin_cogvideox_dpm", 6),  # x, eps, old_pred_original_sample, noise -> prev_sample, pred_original_sample
    # two-stage steps at their second stage: the first stage's sample (and Heun's x0) are read again
    ("dropin_heun", 6),        # x, eps, first-stage sample and x0 -> prev_sample, pred_original_sample
    ("dropin_flow_heun", 5),   # x, velocity, first-stage sample and x0 -> prev_sample
    ("dropin_kdpm2", 5),       # x, eps, first-stage sample -> prev_sample, pred_original_sample
    ("dropin_kdpm2_a", 6),     # ... and the generator's noise
    ("dropin_dpm_sde", 6),     # ... and the Brownian-tree noise
    # one-state steps
    ("dropin_ddim_inverse", 4),
    ("dropin_cogvideox_ddim", 4),
    ("dropin_flow_map_euler", 3),
    ("dropin_tcd", 5),         # x, eps, noise -> prev_sample, pred_noised_sample
    ("dropin_unclip", 5),      # x, eps, noise -> prev_sample, pred_original_sample
    ("dropin_cm", 4),          # x, model output, noise -> prev_sample
    ("dropin_wuerstchen", 4),
    ("dropin_sde_ve_pred", 5),     # x, score, noise -> prev_sample, prev_sample_mean
    ("dropin_sde_ve_correct", 4),  # x, score, noise -> prev_sample (the norms' second read not counted)
    ("dropin_ddim_parallel", 3),   # x, eps (each sample at its own timestep) -> prev_sample
    ("dropin_ddpm_parallel", 3),
])
def test_dropin_byte_counts_match_what_the_step_returns(op, units):
    assert bench.CASES[op].bytes_moved(1000, torch.float32) == units * 1000 * 4


@pytest.mark.parametrize("op", ["step_ddim", "step_cfg", "step_dpmpp2m"])
def test_floor_call_scales_a_copy_to_the_case_bytes(op):
    spec = bench.Spec((3, 5, 7), torch.float32, torch.device("cpu"))
    call, scale = bench.floor_call(op, spec, n_sets=3)
    case = bench.CASES[op]
    assert scale == case.bytes_moved(spec.numel, spec.dtype) / (2 * spec.numel * 4)
    outs = [call() for _ in range(4)]
    assert all(o.shape == spec.shape and o.dtype == spec.dtype for o in outs)
    assert not torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[3])  # rotates over the 3 sets
    with pytest.raises(ValueError, match="unknown case"):
        bench.floor_call("nope", spec)


def test_parse_size_and_dtype():
    assert bench.parse_size("16x4x64x64") == (16, 4, 64, 64)
    assert bench.parse_size("16M") == (16, 2**20)
    assert bench.parse_size("1K") == (16, 64)
    assert bench.parse_size(10) == (1, 10)
    assert bench.parse_size((2, 3)) == (2, 3)
    for bad in ("", "4xx4", "abc", "0x4", "-3"):
        with pytest.raises(ValueError, match="size"):
            bench.parse_size(bad)
    assert bench.parse_dtype("bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        bench.parse_dtype("int8")


# ---- suite: rows, agreement with the eager formulas, JSON/table shape ------------------------------

def test_suite_rows_agree_with_eager_and_are_consistent():
    ops = ["add_noise", "step_ddim", "step_cfg", "step_dpmpp2m", "encode_v", "step_ancestral", "langevin"]
    rep = _run(ops=ops)
    order = [o for o in bench.CASES if o in ops]  # rows follow registration order
    assert [(r.op, r.provider) for r in rep.rows] == [(o, p) for o in order for p in ("fastdiff", "eager")]
    for r in rep.rows:
        assert r.status == "ok", (r.op, r.provider, r.status)
        assert r.time_ms > 0 and r.bytes == bench.CASES[r.op].bytes_moved(r.numel, torch.float32)
        assert math.isclose(r.gbps, r.bytes / (r.time_ms * 1e-3) / 1e9, rel_tol=1e-9)
        # % copy is against the copy timed beside the case (same input sets), not the headline figure
        assert r.copy_gbps is not None and r.copy_gbps > 0
        assert math.isclose(r.pct_copy, 100 * r.gbps / r.copy_gbps, rel_tol=1e-9)
        # deterministic cases: the fused op and the hand-written eager formula compute the same thing
        if r.op in ("add_noise", "step_ddim", "step_cfg", "step_dpmpp2m"):
            assert r.max_rel_err is not None and r.max_rel_err <= 1e-4, (r.op, r.provider, r.max_rel_err)
    fd, eg = rep.find("step_ddim", "fastdiff")[0], rep.find("step_ddim", "eager")[0]
    assert math.isclose(fd.speedup["eager"], eg.time_ms / fd.time_ms, rel_tol=1e-9)
    assert "eager" not in eg.speedup


def test_bf16_rows_checked_against_fp32_reference():
    rep = _run(ops=["step_cfg"], dtypes=["bf16"])
    fd, eg = rep.find("step_cfg", "fastdiff")[0], rep.find("step_cfg", "eager")[0]
    assert fd.status == "ok" and 0 < fd.max_rel_err <= 5e-2 and fd.dtype == "bf16"
    # the bf16 eager baseline's own rounding error is recorded (not judged): fused fp32 math beats it
    assert eg.status == "ok" and eg.max_rel_err > fd.max_rel_err


def test_report_json_and_table_shape(tmp_path):
    rep = _run(ops=["step_ddim", "langevin"])
    path = tmp_path / "r.json"
    rep.to_json(str(path))
    data = json.loads(path.read_text())
    assert set(data) == {"meta", "rows", "summary"}
    for key in ("date", "device", "device_name", "versions", "copy_gbps", "timer", "cases"):
        assert key in data["meta"]
    assert {"torch", "triton", "python"} <= set(data["meta"]["versions"])
    row = data["rows"][0]
    for key in ("op", "shape", "numel", "dtype", "provider", "status", "time_ms", "bytes", "gbps", "pct_copy",
                "speedup", "max_rel_err"):
        assert key in row
    assert "step 2x4x8x8 fp32" in data["summary"] and "eager" in data["summary"]["step 2x4x8x8 fp32"]
    table = bench.format_table(rep)
    header = table.splitlines()[0]
    for col in ("op", "size", "dtype", "provider", "time", "GB/s", "% copy", "vs eager", "vs compile"):
        assert col in header
    assert len([ln for ln in table.splitlines() if ln.startswith(("step_ddim", "langevin"))]) == 4
    md = bench.format_markdown(rep)
    assert "- date:" in md and "- device:" in md and "torch " in md and "| step_ddim |" in md
    # every column is explained, with which way is better, in the table's notes and in the markdown
    assert "copy GB/s" in header
    for name, text in bench.COLUMN_NOTES:
        assert f"  {name}: {text}" in table and f"- **{name}**: {text}" in md
    for name in ("time", "GB/s", "% copy", "vs X"):
        assert "better" in dict(bench.COLUMN_NOTES)[name]


def test_case_copy_is_timed_on_the_cases_own_input_sets(monkeypatch):
    """The copy a row is compared with rotates over the very list of input sets its providers rotate over
    (one more rotating call than providers, all on one list), and % copy is taken against it."""
    import fastdiff.bench.runner as runner

    lists = []
    real_rotating = runner.rotating
    monkeypatch.setattr(runner, "rotating", lambda fn, sets: lists.append(sets) or real_rotating(fn, sets))
    rep = _run(ops=["step_ddim"], providers=["fastdiff", "eager"])
    assert len(lists) == 3 and all(sets is lists[0] for sets in lists)  # fastdiff, eager, copy
    for row in rep.rows:
        assert row.copy_gbps > 0 and math.isclose(row.pct_copy, 100 * row.gbps / row.copy_gbps)
    assert rep.rows[0].copy_gbps == rep.rows[1].copy_gbps  # one copy per case


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="providers"):
        _run(providers=["fastdiff", "numba"])
    with pytest.raises(ValueError, match="unknown ops"):
        _run(ops=["no_such_op"])
    with pytest.raises(ValueError, match="device"):
        _run(device="meta")


def test_unavailable_provider_is_skipped_cleanly(monkeypatch):
    def missing():
        raise bench.Unavailable("diffusers not importable (test)")

    monkeypatch.setattr(bench.common, "import_diffusers", missing)
    rep = _run(ops=["step_ddim"], providers=["fastdiff", "diffusers"])
    row = rep.find("step_ddim", "diffusers")[0]
    assert row.status.startswith("skipped: diffusers not importable") and row.time_ms is None
    assert rep.find("step_ddim", "fastdiff")[0].ok
    table = bench.format_table(rep)
    row_line = next(line for line in table.splitlines() if line.startswith("step_ddim") and "diffusers" in line)
    assert row_line.split()[-1] == "skipped" and "importable" not in row_line  # a short time column
    notes = [line for line in table.splitlines() if "not importable" in line]
    assert len(notes) == 1 and "pip install 'fastdiff[compat]'" in notes[0]  # said once, with the extra
    assert "pip install 'fastdiff[compat]'" in bench.format_markdown(rep)
    assert rep.find("langevin", "diffusers") == []  # no diffusers equivalent: no row at all


def test_cli_says_once_which_extra_to_install(monkeypatch, capsys):
    def missing():
        raise bench.Unavailable("diffusers not importable (ModuleNotFoundError)")

    monkeypatch.setattr(bench.common, "import_diffusers", missing)
    args = _cli_args(["--quick", "--device", "cpu", "--sizes", "1x4x8x8", "--providers", "fastdiff,diffusers",
                      "--ops", "step_ddim,add_noise"])
    assert cli_bench.run(args) == 0
    out = capsys.readouterr().out
    assert out.count("fastdiff[compat]") == 1
    assert "skipped: diffusers" not in out.split("copy bandwidth")[0]  # the table itself stays short


def test_register_case_and_provider_extension():
    case = bench.register_case(bench.Case("test_axpy", "2x + y", inputs={"x": 1, "y": 1}, writes={"out": 1},
                                          group="test", check=("fastdiff",)))
    try:
        bench.register_provider("test_axpy", "eager", lambda spec: (lambda inp: (2 * inp["x"] + inp["y"],)))

        @bench.provider("test_axpy", "fastdiff")
        def _(spec):
            return lambda inp: (torch.add(inp["y"], inp["x"], alpha=2),)

        assert bench.providers_for("test_axpy") == ["fastdiff", "eager", "compile"]
        rep = _run(ops=["test_axpy"])
        assert [r.provider for r in rep.rows] == ["fastdiff", "eager"]
        assert all(r.ok and r.status == "ok" for r in rep.rows)
        assert case.bytes_moved(10, torch.float32) == 120
        with pytest.raises(ValueError, match="compile"):
            bench.register_provider("test_axpy", "compile", lambda spec: None)

        # a provider that disagrees with eager is flagged, not silently timed as a win
        bench.register_provider("test_axpy", "fastdiff", lambda spec: (lambda inp: (inp["x"],)))
        bad = _run(ops=["test_axpy"]).find("test_axpy", "fastdiff")[0]
        assert bad.status.startswith("mismatch")
    finally:
        bench.CASES.pop("test_axpy", None)
        for p in bench.PROVIDERS:
            bench.registry._FACTORIES.pop(("test_axpy", p), None)


def test_diffusers_providers_match_eager():
    pytest.importorskip("diffusers")
    rep = _run(ops=["add_noise", "step_ddim", "step_cfg"], providers=["eager", "diffusers"])
    rows = [r for r in rep.rows if r.provider == "diffusers"]
    assert len(rows) == 3
    for r in rows:
        assert r.status == "ok" and r.max_rel_err <= 1e-4, (r.op, r.status, r.max_rel_err)


def test_dropin_cases_match_diffusers():
    pytest.importorskip("diffusers")
    pytest.importorskip("fastdiff.diffusers")
    rep = _run(groups=["dropin"], providers=["fastdiff", "diffusers"])
    names = {"dropin_ddim", "dropin_euler", "dropin_dpmpp2m", "dropin_deis", "dropin_flow_euler", "dropin_pndm",
             "dropin_edm_euler", "dropin_ddpm", "dropin_euler_a", "dropin_lcm",
             "dropin_unipc", "dropin_dpm_single", "dropin_lms", "dropin_ipndm", "dropin_edm_dpm", "dropin_dpm_inverse",
             "dropin_sa", "dropin_cosine_dpm", "dropin_cogvideox_dpm", "dropin_heun", "dropin_flow_heun",
             "dropin_kdpm2", "dropin_kdpm2_a", "dropin_dpm_sde", "dropin_ddim_inverse", "dropin_cogvideox_ddim",
             "dropin_flow_map_euler", "dropin_tcd", "dropin_unclip", "dropin_cm", "dropin_wuerstchen",
             "dropin_sde_ve_pred", "dropin_sde_ve_correct", "dropin_ddim_parallel", "dropin_ddpm_parallel"}
    assert {r.op for r in rep.rows} == names
    if importlib.util.find_spec("torchsde") is None:  # diffusers' Brownian-noise classes need it
        names -= {"dropin_cosine_dpm", "dropin_dpm_sde"}
    # the reference's second call (after a rewind) matches its first: the rewind restores its state
    for r in [row for name in sorted(names) for row in rep.find(name, "fastdiff") + rep.find(name, "diffusers")]:
        assert r.status == "ok" and r.max_rel_err <= 1e-4, (r.op, r.provider, r.status, r.max_rel_err)


def test_dropin_rows_cover_every_scheduler_class():
    """Every scheduler class fastdiff.diffusers exports has a drop-in row."""
    import fastdiff.diffusers as fdd

    classes = {n for n in fdd.__all__ if n.endswith("Scheduler") and n != "FusedSchedulerBase"}
    timed = {c.op.split("fastdiff.diffusers.", 1)[1].split("(", 1)[0]
             for c in bench.CASES.values() if c.group == "dropin"}
    assert classes <= timed, sorted(classes - timed)


# ---- timers --------------------------------------------------------------------------------------

def test_time_interleaved_orders_work():
    res = bench.time_interleaved({"short": lambda: time.sleep(0.001), "long": lambda: time.sleep(0.004)},
                                 rounds=3, target_s=0.01)
    assert res["long"]["median"] > res["short"]["median"] >= 0.0009
    assert set(res["short"]) == {"median", "min", "iqr", "number"}


def test_rotating_cycles_through_sets():
    seen = []
    call = bench.rotating(lambda s: seen.append(s["i"]), [{"i": 0}, {"i": 1}, {"i": 2}])
    for _ in range(7):
        call()
    assert seen == [0, 1, 2, 0, 1, 2, 0]


def test_copy_bandwidth_and_loop_overhead_cpu():
    bw = bench.measure_copy_bandwidth("cpu", nbytes=2**20, quick=True)
    assert bw["gbps"] > 0 and bw["bytes"] == 2 * 2**20 and "one thread" in bw["method"]
    threads = torch.get_num_threads()
    bench.measure_copy_bandwidth("cpu", nbytes=2**20, quick=True)
    assert torch.get_num_threads() == threads  # the one-thread copy restores the caller's thread count
    res = bench.step_loop_overhead("cpu", steps=4, shape=(1, 4, 8, 8), quick=True)
    assert res["per_step_us"] > 0 and res["denoiser_us"] > 0 and res["steps"] == 4
    with pytest.raises(ValueError, match="cuda_graph"):
        bench.step_loop_overhead("cpu", cuda_graph=True)


# ---- CLI -----------------------------------------------------------------------------------------

def _cli_args(argv):
    parser = argparse.ArgumentParser(prog="fastdiff")
    cli_bench.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", *argv])


def test_cli_quick_writes_json_and_plot(tmp_path, capsys):
    js, png, md = tmp_path / "b.json", tmp_path / "b.png", tmp_path / "b.md"
    args = _cli_args(["--quick", "--device", "cpu", "--sizes", "1x4x8x8", "--providers", "fastdiff,eager",
                      "--ops", "step_ddim,langevin", "--json", str(js), "--plot", str(png), "--markdown", str(md)])
    assert args.func is cli_bench.run
    assert cli_bench.run(args) == 0
    out = capsys.readouterr().out
    assert "step_ddim" in out and "langevin" in out and "copy bandwidth" in out
    data = json.loads(js.read_text())
    assert {r["op"] for r in data["rows"]} == {"step_ddim", "langevin"}
    assert {r["provider"] for r in data["rows"]} == {"fastdiff", "eager"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| step_ddim |" in md.read_text()


def test_cli_errors_and_list(capsys):
    assert cli_bench.run(_cli_args(["--list"])) == 0
    assert "step_dpmpp2m" in capsys.readouterr().out
    assert cli_bench.run(_cli_args(["--quick", "--providers", "nope"])) == 2
    err = capsys.readouterr().err
    assert "providers" in err and err.startswith("fastdiff bench: error: ")


@pytest.mark.parametrize("argv", [["bench", "--quick", "--providers", "nope"], ["bench", "--threads", "0"],
                                  ["demo", "--quick", "--seed", "-1"]])
def test_cli_errors_have_one_form_and_status_2(argv, capsys, tmp_path):
    """``fastdiff <cmd>: error: ...`` and exit status 2 for a bad argument, in bench and demo alike."""
    from fastdiff.cli import main

    if argv[0] == "demo":
        argv = [*argv, "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"fastdiff {argv[0]}: error: "), err


@pytest.mark.parametrize("cmd", ["bench", "demo"])
def test_cli_argparse_errors_have_the_same_form(cmd, capsys):
    from fastdiff.cli import main

    with pytest.raises(SystemExit) as exc:
        main([cmd, "--no-such-option"])
    assert exc.value.code == 2
    assert f"fastdiff {cmd}: error: " in capsys.readouterr().err


# ---- profiling -----------------------------------------------------------------------------------

def _names(prof):
    return {e.name for e in prof.events()}


def test_triton_ops_appear_by_library_name_in_profiler(device):
    # The torch.library launchers show up by op name with no instrumentation (on CPU: under the interpreter).
    x, m = torch.randn(2, 4, 8, 8, device=device), torch.randn(2, 4, 8, 8, device=device)
    coefs = fastdiff.step_coefs(in_x=1.0, in_m=-0.5, out_d=0.9, device=device)
    sched = fastdiff.DiscreteVPSchedule()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fastdiff.fused_step(x, m, coefs, backend="triton")
        fastdiff.langevin_step(x, m, 0.1, seed=0, backend="triton")
        fastdiff.add_noise(x, torch.tensor([3, 7], device=device), sched, seed=0, backend="triton")
    assert {"fastdiff::fused_step_", "fastdiff::langevin_step_", "fastdiff::fused_encode_"} <= _names(prof)


def test_instrument_ops_names_torch_path_and_restores():
    original = fastdiff.fused_step
    holder = types.ModuleType("fastdiff_test_holder")  # like `from fastdiff import fused_step` in user code
    holder.fused_step = original
    sys.modules[holder.__name__] = holder
    try:
        x, m = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
        coefs = fastdiff.step_coefs(in_x=1.0, in_m=-0.5, out_d=0.9)
        with bench.instrument_ops(nvtx=False), torch.profiler.profile() as prof:
            # The ops carry their own profiler names (fastdiff.ops.profiling.profiled): nothing to wrap twice.
            assert hasattr(original, "__fastdiff_wrapped__") and fastdiff.fused_step is original
            holder.fused_step(x, m, coefs)
            fastdiff.add_noise(x, torch.tensor([3, 7]), fastdiff.DiscreteVPSchedule(), seed=0)
        names = _names(prof)
        assert {"fastdiff::fused_step", "fastdiff::add_noise", "fastdiff::fused_encode"} <= names
        assert fastdiff.fused_step is original and holder.fused_step is original
        assert fastdiff.ops.step.fused_step is original
    finally:
        del sys.modules[holder.__name__]


def test_profile_sampling_counts_ops(tmp_path):
    x = torch.randn(16, 2)
    coefs = fastdiff.step_coefs(in_x=1.0, in_m=-0.5, out_d=0.9, out_x=0.1)

    def loop(x):
        for i in range(3):
            x = fastdiff.fused_step(x, -x, coefs)
        return fastdiff.langevin_step(x, -x, 0.01, seed=0)

    trace = tmp_path / "trace.json"
    res = bench.profile_sampling(loop, x, trace_path=str(trace))
    assert res.ops["fastdiff::fused_step"]["count"] == 3
    assert res.ops["fastdiff::langevin_step"]["count"] == 1
    assert res.ops["fastdiff::fused_step"]["cpu_total_us"] > 0
    assert res.result.shape == x.shape and "fastdiff::fused_step" in res.table
    assert "fastdiff::fused_step" in trace.read_text()


# ---- the GPU check script ------------------------------------------------------------------------

def _load_script(name: str):
    """Import ``benchmarks/<name>.py`` as a module (the scripts are not a package)."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_script_runs_end_to_end_on_cpu(tmp_path):
    """``benchmarks/gpu_check.py --quick`` on CPU: the one-call GPU script must not rot while no GPU runs it.

    It exercises everything the GPU run does except the CUDA-only parts (the ``-m gpu`` test child, CUDA graphs
    and the >= 16M-element sizes): every case with every provider, the loop-overhead extra, the results files
    and the table printed last.
    """
    import os
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "gpu_check.py"), "--quick",
                           "--device", "cpu", "--tests", "no", "--out-dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (js,) = tmp_path.glob("*-cpu-quick.json")
    data = json.loads(js.read_text())
    assert {r["op"] for r in data["rows"]} == set(bench.CASES)
    assert all(r["status"] == "ok" or r["status"].startswith("skipped") for r in data["rows"]), \
        [(r["op"], r["provider"], r["status"]) for r in data["rows"] if r["status"] != "ok"]
    assert {"fastdiff", "eager"} <= {r["provider"] for r in data["rows"]}
    assert "loop_eager" in data["meta"]["extras"]
    graphs = data["meta"]["extras"]["dropin_graphs"]  # on CPU: the eager loops of two classes, nothing captured
    assert graphs["total"] == 2 and graphs["captured"] == 0
    assert all(r["status"].startswith("eager only") and r["eager_us_per_step"] > 0 for r in graphs["classes"].values())
    assert (tmp_path / js.name.replace(".json", ".md")).read_text().startswith("# fastdiff GPU check")
    last = proc.stdout.strip().splitlines()
    assert last[-1].startswith("wrote ") and any("copy bandwidth" in ln for ln in last[-6:])


def test_host_overhead_script_runs_and_restores_the_launchers():
    from fastdiff.ops import dispatch
    from fastdiff.ops.dispatch import launcher

    mod = _load_script("host_overhead")
    before = [(launcher(name).op, launcher(name).direct) for name in mod.LAUNCHERS]
    interpret = dispatch._INTERPRET
    rows = mod.main(n=50)
    assert len(rows) == 10 and all(us > 0 for _, us in rows)
    assert [(launcher(name).op, launcher(name).direct) for name in mod.LAUNCHERS] == before
    assert dispatch._INTERPRET == interpret


def test_cpu_goals_parts_judge_and_record(tmp_path, monkeypatch):
    """benchmarks/cpu_goals.py without its long measurements: the interleaved ratio (the base against itself is
    exactly 1), the verdicts, the noise goal's numpy-Philox switch (restored afterwards) and the markdown record."""
    import time

    import fastdiff.random as fd_random

    mod = _load_script("cpu_goals")
    res = mod.interleaved_ratios({"a": lambda: sum(range(50)), "b": lambda: sum(range(100))}, "b", 3,
                                 time.perf_counter_ns)
    assert res["b"]["b_over_this"] == 1.0 and res["a"]["us"] > 0 and len(res["a"]["range"]) == 2
    real = fd_random.normals_jit
    with mod._numpy_philox():
        assert fd_random.normals_jit(1, 1, torch.zeros(1, dtype=torch.int64), 0, 0, 0) is None
    assert fd_random.normals_jit is real
    goals = [mod._goal("a", True, {"x": 1}), mod._goal("b", False, {}), mod._goal("c", None, {}, "why")]
    assert [g["verdict"] for g in goals] == ["PASS", "MISS", "not measured"]
    meta = {"date": "d", "cpu": "c", "cores": 2, "versions": {"torch": "t"}, "loadavg_before": [0],
            "loadavg_after": [0], "command": "python benchmarks/cpu_goals.py", "wall_s": 1.0}
    md = mod._markdown({"meta": meta, "goals": goals})
    assert "| a | **PASS** |" in md and "**not measured** (why)" in md and "torch t" in md


def test_gpu_check_installs_then_restarts_itself(monkeypatch):
    """On a bare GPU machine the script pip-installs the tree, then must re-exec: a running Python never sees a
    fresh editable install (its .pth hook is read at start-up). Checked with pip and execv recorded, not run."""
    import builtins
    import os

    mod = _load_script("gpu_check")
    real_import = builtins.__import__

    def no_fastdiff(name, *args, **kwargs):
        if name.startswith("fastdiff"):
            raise ImportError("not installed")
        return real_import(name, *args, **kwargs)

    ran, execs = [], []
    monkeypatch.setattr(builtins, "__import__", no_fastdiff)
    monkeypatch.setattr(mod.subprocess, "run", lambda cmd, **kw: ran.append(cmd))
    monkeypatch.setattr(mod.os, "execv", lambda exe, argv: execs.append(argv))
    monkeypatch.setenv("FASTDIFF_GPU_CHECK_INSTALLED", "")  # so that teardown restores the variable's absence
    monkeypatch.delenv("FASTDIFF_GPU_CHECK_INSTALLED")
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--budget", "300"])
    mod._ensure_fastdiff()
    assert ran and ran[-1][-2:] == ["-e", mod.ROOT] and "--no-index" in ran[-1]
    assert execs == [[sys.executable, os.path.abspath(mod.__file__), "--budget", "300"]]
    assert os.environ["FASTDIFF_GPU_CHECK_INSTALLED"] == "1"
    with pytest.raises(ImportError):  # after the restart, a still-missing package is an error, not a loop
        mod._ensure_fastdiff()


def test_gpu_check_judges_every_goal_from_a_cuda_report():
    """The verdict lines only a CUDA run prints, checked on a made-up report (so they cannot rot unseen)."""
    mod = _load_script("gpu_check")
    big, n = "16x4x512x512", 16 * 4 * 512 * 512

    def row(op, group, dtype="fp32", shape=big, numel=n, **kw):
        return bench.Row(op=op, group=group, shape=shape, numel=numel, dtype=dtype, provider="fastdiff",
                         time_ms=1.0, **kw)

    out4 = bench.CASES["step_ddim"].bytes_moved(n, torch.float32) // 3  # one fp32 output
    rows = [
        row("step_ddim", "step", pct_copy=91.0, speedup={"compile": 1.3}, peak_extra_bytes=out4),
        row("step_cfg", "step", pct_copy=80.0, speedup={"compile": 1.0}, peak_extra_bytes=2 * out4),
        row("add_noise", "encode", pct_copy=88.0),
        bench.Row(op="langevin", group="langevin", shape=big, numel=n, dtype="bf16", provider="fastdiff",
                  status="error: boom"),
    ] + [row(op, "dropin", dtype="fp16", shape="16x4x128x128", numel=2**20, speedup={"diffusers": x})
         for op, x in (("dropin_ddim", 9.0), ("dropin_euler", 10.0), ("dropin_dpmpp2m", 12.0),
                       ("dropin_flow_euler", 5.0), ("dropin_heun", 2.0))]
    report = bench.Report(meta={}, rows=rows)
    extras = {"loop_eager": {"overhead_us": 35.0, "per_step_us": 41.0},
              "loop_graph": {"overhead_us": 12.0, "per_step_us": 15.0}}
    extras["dropin_graphs"] = {"captured": 1, "total": 2, "classes": {
        "ddim": {"status": "ok"}, "unclip": {"status": "capture failed: RuntimeError: operation not permitted"}}}
    lines = mod._goals(report, extras, "cuda")
    text = "\n".join(lines)
    assert "MISS drop-in loops captured in a CUDA graph, replay = eager: 1 of 2 classes (not: unclip)" in text
    assert "PASS step_ddim 16x4x512x512 fp32: 91.0% of copy bandwidth" in text
    assert "MISS step_cfg 16x4x512x512 fp32: 80.0%" in text
    assert "MISS langevin 16x4x512x512 bf16: error: boom" in text
    assert "PASS drop-in step vs diffusers 16x4x128x128 fp16: 8.57x geomean over 4 schedulers" in text
    assert "info drop-in step vs diffusers 16x4x128x128 fp16, every class: 6.41x geomean over 5 rows, " \
           "slowest dropin_heun 2.00x" in text  # the goal is the four schedulers; the other classes are reported
    assert "PASS step vs torch.compile 16x4x512x512 fp32: 1.14x geomean over 2 cases" in text
    assert "MISS peak memory step_cfg" in text and "PASS peak memory" not in text
    assert "PASS 50-step loop eager: 35.0 us/step" in text and "MISS 50-step loop graph: 12.0 us/step" in text
    # on CPU only the loop figures are reported, as information
    assert all(ln.startswith("info") for ln in mod._goals(report, extras, "cpu"))


def test_hmc_leapfrog_case_matches_eager():
    # the fused leapfrog pass and the pyro-style eager lines compute the same (x, p): checked outputs agree
    rep = _run(ops=["hmc_leapfrog"])
    fd = rep.find("hmc_leapfrog", "fastdiff")[0]
    assert fd.status == "ok" and fd.max_rel_err is not None and fd.max_rel_err <= 1e-5, fd.max_rel_err


def test_cpu_step_pass_script_runs(capsys):
    """``benchmarks/cpu_step_pass.py`` at the smallest size its pass takes: it prints a row per sampler and
    leaves the compiled pass switched on afterwards (it toggles it per round)."""
    from fastdiff.ops.step import cpu_jit

    if not cpu_jit.available():
        pytest.skip("numba is not importable: the script has no compiled pass to compare")
    mod = _load_script("cpu_step_pass")
    threads = torch.get_num_threads()
    try:
        assert mod.main(["--size", "1x4x64x128", "--samplers", "euler,dpmpp_2m", "--steps", "2", "--rounds", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "euler" in out and "dpmpp_2m" in out and out.count("ratio") == 2
    assert cpu_jit.available()
