"""fastdiff.distributed: world-size and batch-size invariance, resumable shards, failure handling.

The multi-rank tests launch real ``torchrun`` jobs (gloo on CPU) on the tiny problem of
``tests/faces/dist_scripts/dist_problem.py``; the in-process tests run at world size 1 (no
process group). Every comparison is bit-exact: a row's result depends only on
(seed, row id), so any split of the rows must reproduce the one-process run exactly.
"""
import json
import os
import subprocess
import sys
import time

import pytest
import torch

import fastdiff
import fastdiff.distributed as fdist
import fastdiff.mcmc
import fastdiff.sampling
from fastdiff.distributed._plan import _missing, _plan
from fastdiff.distributed._shards import _shard_name

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dist_scripts")
sys.path.insert(0, SCRIPTS)
import dist_problem as P  # noqa: E402

ROWS = 10  # the torchrun jobs' size: 3 ranks get 3/3/4 rows (uneven), 2 ranks 5/5


def _torchrun(nproc, args, timeout=240, env_extra=None):
    """Run ``run_job.py`` under torchrun; return (returncode, combined output, seconds)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                        "GROUP_RANK", "TORCHELASTIC_RUN_ID", "FASTDIFF_TEST_FAIL")}
    env.update(OMP_NUM_THREADS="1", TRITON_INTERPRET="1", **(env_extra or {}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "--monitor-interval=0.2", os.path.join(SCRIPTS, "run_job.py"), *[str(a) for a in args]]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - t0


def _load(path):
    return torch.load(path, weights_only=True)


def _check_partition(out_dir, n):
    """The shard files cover rows [0, n) exactly once (no gap, no duplicate)."""
    names = sorted(f for f in os.listdir(out_dir) if f.startswith("shard-"))
    ranges = sorted(tuple(int(p) for p in f[len("shard-"):-len(".pt")].split("-")) for f in names)
    covered = [r for s, e in ranges for r in range(s, e)]
    assert covered == list(range(n)), ranges
    return ranges


@pytest.fixture(scope="module")
def reference():
    """One process, whole batch: the results every split must reproduce."""
    P.reset()
    return {"sample": P.run_sample(ROWS), "langevin": P.run_langevin(ROWS)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, reference):
    """Job B: 3 ranks gather, then a 3-rank shard run killed mid-way; job C: 2 ranks resume it, gather,
    write a fresh shard run, and finally meet an out_dir written with another seed (refused)."""
    root = tmp_path_factory.mktemp("dist")
    res, out = root / "results", root / "out"
    res.mkdir()
    out.mkdir()
    rc_b, log_b, _ = _torchrun(3, ["--jobs", "sample,langevin,langevin_dir", "--rows", ROWS, "--batch-size", 2,
                                   "--results", res, "--out-dir", out, "--fail", "langevin_dir:0:1:exit"])
    killed = sorted(f for f in os.listdir(out / "langevin_dir") if f.startswith("shard-"))
    # a temporary file as a writer killed mid-write leaves it: must be ignored and cleared
    (out / "langevin_dir" / ".shard-000000000000-000000000010.pt.tmp.99999").write_bytes(b"torn")
    P.reset()
    P.run_sample(ROWS, out_dir=str(out / "sample_dir_old"), seed=P.SEED + 1)
    old_manifest = (out / "sample_dir_old" / fdist.MANIFEST_NAME).read_text()
    rc_c, log_c, _ = _torchrun(2, ["--jobs", "langevin_dir,sample,langevin,sample_dir,sample_dir_old", "--rows", ROWS,
                                   "--batch-size", 3, "--results", res, "--out-dir", out])
    return dict(res=res, out=out, rc_b=rc_b, log_b=log_b, rc_c=rc_c, log_c=log_c, killed=killed,
                old_manifest=old_manifest)


# ------------------------------------------------------------------------------------------------------------
# torchrun jobs


def test_three_ranks_uneven_shares_match_one_process(runs, reference):
    for job in ("sample", "langevin"):
        for rank in range(3):
            got = _load(runs["res"] / f"{job}.rank{rank}.pt")
            assert torch.equal(got, reference[job]), (job, rank, runs["log_b"][-3000:])


def test_two_ranks_match_one_process(runs, reference):
    for job in ("sample", "langevin"):
        for rank in range(2):
            got = _load(runs["res"] / f"{job}.rank{rank}.pt")
            assert torch.equal(got, reference[job]), (job, rank, runs["log_c"][-3000:])
    # shard run: the same rows on disk, every rank returns the same sorted path list
    paths = [_load(runs["res"] / f"sample_dir.rank{r}.pt") for r in range(2)]
    assert paths[0] == paths[1] and len(paths[0]) == 4  # 2 ranks x (3 + 2 rows) micro-batches
    assert torch.equal(_load(runs["res"] / "sample_dir.loaded.pt"), reference["sample"])
    _check_partition(runs["out"] / "sample_dir", ROWS)


def test_kill_and_resume_matches_uninterrupted(runs, reference):
    assert runs["rc_b"] != 0, "the injected os._exit must fail job B"
    assert "exitcode  : 3" in runs["log_b"] or "exitcode: 3" in runs["log_b"], runs["log_b"][-3000:]
    # killed after its first micro-batch on rank 0: some rows on disk, not all
    assert 0 < len(runs["killed"]) < 6, runs["killed"]
    d = runs["out"] / "langevin_dir"
    assert torch.equal(_load(runs["res"] / "langevin_dir.loaded.pt"), reference["langevin"])
    ranges = _check_partition(d, ROWS)
    # the shards written before the kill were kept, not recomputed
    assert set(runs["killed"]) <= set(os.listdir(d)), (runs["killed"], ranges)
    assert not [f for f in os.listdir(d) if ".tmp." in f]
    for r in range(2):
        assert _load(runs["res"] / f"langevin_dir.rank{r}.pt") == [str(d / _shard_name(s, e)) for s, e in ranges]


def test_mismatched_manifest_refused_on_every_rank(runs):
    assert runs["rc_c"] != 0
    log = runs["log_c"]
    assert log.count("holds a run with a different configuration") >= 1, log[-3000:]
    assert f"seed: {P.SEED + 1} on disk, {P.SEED} now" in log
    assert not os.path.exists(runs["res"] / "sample_dir_old.rank0.pt")
    assert (runs["out"] / "sample_dir_old" / fdist.MANIFEST_NAME).read_text() == runs["old_manifest"]


@pytest.mark.parametrize("mode", ["raise", "hang"])
def test_failing_rank_ends_job_in_bounded_time(tmp_path, mode):
    # "raise": rank 1's model raises at its 2nd micro-batch; rank 0 learns it at the next status exchange.
    # "hang": rank 1 sleeps 600 s; rank 0 gives up after timeout=2 s and torchrun then stops rank 1.
    # Without the mechanism rank 0 would wait in a collective for gloo's default 30 minutes.
    rc, log, elapsed = _torchrun(2, ["--jobs", "sample", "--rows", 8, "--batch-size", 2, "--results", tmp_path,
                                     "--timeout", 2, "--fail", f"sample:1:1:{mode}"], timeout=200)
    assert rc != 0
    assert elapsed < 150, elapsed  # torchrun start-up and imports dominate; the failure itself takes ~2 s
    assert "[fastdiff.distributed rank 0] aborting the job" in log, log[-3000:]
    if mode == "raise":
        assert "injected failure on rank 1" in log
        assert "[fastdiff.distributed rank 1] failed:" in log
    else:
        assert "lost contact with another rank while exchanging status" in log
    assert not list(tmp_path.glob("sample.rank*.pt"))


# ------------------------------------------------------------------------------------------------------------
# world size 1 (no process group)


def test_row_shares_and_plan_cover_each_missing_row_once():
    assert fdist.row_shares(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert fdist.row_shares(2, 4) == [(0, 0), (0, 1), (1, 1), (1, 2)]
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        n = int(torch.randint(1, 40, (), generator=g))
        cuts = sorted(set(torch.randint(0, n + 1, (6,), generator=g).tolist()))
        done = [(a, b) for a, b in zip(cuts[::2], cuts[1::2]) if a < b]
        world = int(torch.randint(1, 6, (), generator=g))
        bs = None if int(torch.randint(0, 3, (), generator=g)) == 0 else int(torch.randint(1, 7, (), generator=g))
        todo = _missing(n, done)
        plans = _plan(todo, world, bs)
        rows = sorted(r for p in plans for s, e in p for r in range(s, e))
        assert sorted(rows + [r for s, e in done for r in range(s, e)]) == list(range(n))
        sizes = [sum(e - s for s, e in p) for p in plans]
        assert max(sizes) - min(sizes) <= 1
        for p in plans:
            assert all(s < e and (bs is None or e - s <= bs) for s, e in p)
            flat = [r for s, e in p for r in range(s, e)]
            assert flat == sorted(flat)


def test_one_process_equals_sampling_sample_and_is_batch_invariant():
    gmm, sig, seed = P.GMM, P.SIGMAS, 7
    rows = torch.arange(9)
    x = fastdiff.sampling.initial_noise((9, 2), seed, row_ids=rows) * float(sig[0])
    ref = fastdiff.sampling.sample(gmm.denoiser, x, sig, sampler="dpmpp_2m_sde", seed=seed, row_ids=rows, eta=0.7)
    for bs in (None, 1, 4):
        got = fdist.sample(gmm.denoiser, (2,), sig, num_samples=9, sampler="dpmpp_2m_sde", seed=seed,
                           batch_size=bs, eta=0.7)
        assert torch.equal(got, ref), bs
    assert not torch.equal(ref, fdist.sample(gmm.denoiser, (2,), sig, num_samples=9, sampler="dpmpp_2m_sde",
                                             seed=seed + 1, eta=0.7))


def test_langevin_one_process_equals_mcmc_and_init_forms():
    gmm, seed, n = P.GMM, 3, 7
    rows = torch.arange(n)
    h = torch.linspace(0.01, 0.07, n)
    x0 = fastdiff.sampling.initial_noise((n, 2), seed, row_ids=rows)
    ref = fastdiff.mcmc.langevin(gmm.grad_log_prob, x0, h, 9, seed=seed, row_ids=rows)
    got = fdist.langevin(gmm.grad_log_prob, (2,), num_chains=n, step_size=h, n_steps=9, seed=seed, batch_size=3)
    assert torch.equal(got, ref)
    start = 2.0 * x0 + 1.0
    ref2 = fastdiff.mcmc.langevin(gmm.grad_log_prob, start, h, 9, seed=seed, row_ids=rows)
    by_tensor = fdist.langevin(gmm.grad_log_prob, (2,), num_chains=n, step_size=h, n_steps=9, seed=seed,
                               init=start, batch_size=2)
    by_fn = fdist.langevin(gmm.grad_log_prob, (2,), num_chains=n, step_size=h, n_steps=9, seed=seed,
                           init=lambda r: 2.0 * fastdiff.sampling.initial_noise((len(r), 2), seed, row_ids=r) + 1.0)
    assert torch.equal(by_tensor, ref2) and torch.equal(by_fn, ref2)


def test_out_dir_resume_in_process(tmp_path, reference):
    d = tmp_path / "run"
    state = {"n": 0}

    class Stop(Exception):
        pass

    def stop_after_two(info):
        state["n"] += 1
        if state["n"] == 2:
            raise Stop  # the process dies right after its second shard is on disk

    with pytest.raises(Stop):
        fdist.sample(P.denoiser, (2,), P.SIGMAS, num_samples=ROWS, sampler=P.SAMPLER, seed=P.SEED, batch_size=3,
                     out_dir=d, callback=stop_after_two)
    assert sorted(f for f in os.listdir(d) if f.startswith("shard-")) == [
        "shard-000000000000-000000000003.pt", "shard-000000000003-000000000006.pt"]
    calls = []
    paths = fdist.sample(P.denoiser, (2,), P.SIGMAS, num_samples=ROWS, sampler=P.SAMPLER, seed=P.SEED, batch_size=4,
                         out_dir=str(d), callback=lambda info: calls.append(info["rows"]))
    assert calls == [(6, 10)]  # only the missing rows were computed
    assert [os.path.basename(p) for p in paths] == [_shard_name(s, e) for s, e in [(0, 3), (3, 6), (6, 10)]]
    assert torch.equal(fdist.load_shards(d), reference["sample"])
    # a finished run restarted: nothing to do, same paths
    assert fdist.sample(P.denoiser, (2,), P.SIGMAS, num_samples=ROWS, sampler=P.SAMPLER, seed=P.SEED,
                        out_dir=d, callback=lambda info: calls.append(info)) == paths and len(calls) == 1
    manifest = json.loads((d / fdist.MANIFEST_NAME).read_text())
    assert manifest["config"]["seed"] == P.SEED and manifest["config"]["sampler"] == P.SAMPLER
    assert manifest["config"]["fastdiff_version"] == fastdiff.__version__


@pytest.mark.parametrize("change,key", [
    (dict(seed=P.SEED + 1), "seed"),
    (dict(sampler="euler"), "sampler"),
    (dict(num_samples=ROWS + 1), "num_samples"),
    (dict(sigmas=fastdiff.karras_sigmas(8, 0.02, 10.0)), "sigmas_sha256"),
    (dict(eta=0.5), "options"),
    (dict(dtype=torch.float64), "dtype"),
    (dict(metadata={"checkpoint": "b"}), "metadata"),
])
def test_mismatched_manifest_refused(tmp_path, change, key):
    base = dict(sigmas=P.SIGMAS, num_samples=ROWS, sampler="euler_ancestral", seed=P.SEED, batch_size=5,
                metadata={"checkpoint": "a"})
    fdist.sample(P.GMM.denoiser, (2,), out_dir=tmp_path, **base)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ValueError, match=rf"different configuration(.|\n)*  {key}: "):
        fdist.sample(P.GMM.denoiser, (2,), out_dir=tmp_path, **{**base, **change})
    assert sorted(os.listdir(tmp_path)) == before


def test_damaged_or_incomplete_dirs_are_refused(tmp_path):
    d = tmp_path / "run"
    fdist.sample(P.GMM.denoiser, (2,), P.SIGMAS, num_samples=6, seed=0, batch_size=3, out_dir=d)
    good = _load(d / "shard-000000000003-000000000006.pt")
    (d / "shard-000000000003-000000000006.pt").write_bytes(b"not a shard")
    with pytest.raises(ValueError, match="shard-000000000003-000000000006.pt cannot be read"):
        fdist.load_shards(d)
    with pytest.raises(ValueError, match="cannot be read"):  # a restart refuses it too, naming the file
        fdist.sample(P.GMM.denoiser, (2,), P.SIGMAS, num_samples=6, seed=0, out_dir=d)
    torch.save({**good, "samples": good["samples"][:2]}, d / "shard-000000000003-000000000006.pt")
    with pytest.raises(ValueError, match="does not match its name"):
        fdist.load_shards(d)
    os.remove(d / "shard-000000000003-000000000006.pt")
    with pytest.raises(ValueError, match=r"rows \[\(3, 6\)\] are missing"):
        fdist.load_shards(d)
    bad = d / "shard-000000000002-000000000006.pt"
    torch.save({**good, "samples": torch.zeros(4, 2)}, bad)  # recorded start 3 disagrees with the name
    with pytest.raises(ValueError, match="does not match its name"):
        fdist.load_shards(d)
    torch.save({**good, "start": 2, "samples": torch.zeros(4, 2)}, bad)  # valid, but overlaps rows 0-3
    with pytest.raises(ValueError, match="overlap"):
        fdist.load_shards(d)
    with pytest.raises(ValueError, match="no manifest.json"):
        fdist.load_shards(tmp_path)


def test_world_size_one_without_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert fdist.init_distributed() == (0, 1)  # nothing to initialise outside torchrun
    monkeypatch.setenv("WORLD_SIZE", "2")  # launched by torchrun, but the group was never initialised
    with pytest.warns(UserWarning, match="init_distributed"):
        out = fdist.sample(P.GMM.denoiser, (2,), P.SIGMAS, num_samples=3, seed=0)
    assert out.shape == (3, 2)


def test_bad_arguments():
    den, sig = P.GMM.denoiser, P.SIGMAS
    ok = dict(num_samples=4, seed=0)
    with pytest.raises(ValueError, match="num_samples"):
        fdist.sample(den, (2,), sig, num_samples=0, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        fdist.sample(den, (2,), sig, batch_size=0, **ok)
    with pytest.raises(TypeError, match="batch_size"):  # the library's int check: a non-int is a TypeError
        fdist.sample(den, (2,), sig, batch_size=2.0, **ok)
    with pytest.raises(TypeError, match="num_chains"):
        fdist.langevin(P.GMM.grad_log_prob, (2,), num_chains=True, step_size=0.1, n_steps=1, seed=0)
    with pytest.raises(TypeError, match="n_steps"):
        fdist.langevin(P.GMM.grad_log_prob, (2,), num_chains=4, step_size=0.1, n_steps=1.0, seed=0)
    with pytest.raises(ValueError, match="seed"):
        fdist.sample(den, (2,), sig, num_samples=4, seed=-1)
    with pytest.raises(TypeError, match="seed"):
        fdist.sample(den, (2,), sig, num_samples=4, seed=1.5)
    with pytest.raises(ValueError, match="sample_shape"):
        fdist.sample(den, (0, 2), sig, **ok)
    with pytest.raises(ValueError, match="sampler"):
        fdist.sample(den, (2,), sig, sampler="nope", **ok)
    with pytest.raises(ValueError, match="on_error"):
        fdist.sample(den, (2,), sig, on_error="ignore", **ok)
    with pytest.raises(TypeError, match="row_ids"):
        fdist.sample(den, (2,), sig, row_ids=torch.arange(4), **ok)
    with pytest.raises(ValueError, match="timeout"):
        fdist.sample(den, (2,), sig, timeout=-1, **ok)
    with pytest.raises(ValueError, match="step_size"):
        fdist.langevin(P.GMM.grad_log_prob, (2,), num_chains=4, step_size=torch.ones(3), n_steps=1, seed=0)
    with pytest.raises(ValueError, match="init"):
        fdist.langevin(P.GMM.grad_log_prob, (2,), num_chains=4, step_size=0.1, n_steps=1, seed=0,
                       init=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="init"):
        fdist.langevin(P.GMM.grad_log_prob, (2,), num_chains=4, step_size=0.1, n_steps=1, seed=0,
                       init=lambda r: torch.zeros(1, 2))


def test_metadata_bytes_sets_arrays_are_compared_on_resume(tmp_path):
    """Non-JSON metadata is recorded by a content digest, so a resume with other values is refused."""
    import numpy as np

    base = dict(num_samples=4, seed=0, batch_size=2)
    meta = {"ckpt": b"\x00sha-a", "tags": {"x", "y"}, "w": np.arange(3, dtype=np.float32)}
    fdist.sample(P.GMM.denoiser, (2,), P.SIGMAS, out_dir=tmp_path, metadata=meta, **base)
    recorded = json.loads((tmp_path / fdist.MANIFEST_NAME).read_text())["config"]["metadata"]
    assert "bytes_sha256" in recorded["ckpt"] and "ndarray_sha256" in recorded["w"]
    # the same values (a new bytes object, a set built in another order, an equal array) resume
    same = {"ckpt": bytes(b"\x00sha-a"), "tags": {"y", "x"}, "w": np.arange(3, dtype=np.float32)}
    paths = fdist.sample(P.GMM.denoiser, (2,), P.SIGMAS, out_dir=tmp_path, metadata=same, **base)
    assert len(paths) == 2
    for change in ({"ckpt": b"\x00sha-b"}, {"tags": {"x", "z"}}, {"w": np.arange(3, dtype=np.float64)},
                   {"w": np.arange(1, 4, dtype=np.float32)}):
        with pytest.raises(ValueError, match=r"different configuration(.|\n)*  metadata: "):
            fdist.sample(P.GMM.denoiser, (2,), P.SIGMAS, out_dir=tmp_path, metadata={**meta, **change}, **base)


def test_metadata_that_cannot_be_compared_is_refused(tmp_path):
    class Opaque:
        pass

    with pytest.raises(TypeError, match=r"metadata \['model'\]\['obj'\] is a .*Opaque"):
        fdist.sample(P.GMM.denoiser, (2,), P.SIGMAS, num_samples=2, seed=0, out_dir=tmp_path,
                     metadata={"model": {"obj": Opaque()}})
    with pytest.raises(TypeError, match=r"metadata \['f'\] is a"):
        fdist.langevin(P.GMM.grad_log_prob, (2,), num_chains=2, step_size=0.1, n_steps=1, seed=0,
                       metadata={"f": object()})
    assert not os.listdir(tmp_path)  # refused before anything was written


def test_legacy_type_name_metadata_manifest_is_refused_with_a_reason(tmp_path):
    fdist.sample(P.GMM.denoiser, (2,), P.SIGMAS, num_samples=2, seed=0, out_dir=tmp_path, metadata={"a": "1"})
    m = json.loads((tmp_path / fdist.MANIFEST_NAME).read_text())
    m["config"]["metadata"] = {"a": {"object": "builtins.bytes"}}  # what earlier versions wrote for bytes
    (tmp_path / fdist.MANIFEST_NAME).write_text(json.dumps(m))
    with pytest.raises(ValueError, match="type name only"):
        fdist.sample(P.GMM.denoiser, (2,), P.SIGMAS, num_samples=2, seed=0, out_dir=tmp_path, metadata={"a": b"1"})


def test_cuda_device_without_cuda_is_a_value_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:1", torch.device("cuda", 0)):
        with pytest.raises(ValueError, match="device"):
            fdist.sample(P.GMM.denoiser, (2,), P.SIGMAS, num_samples=2, seed=0, device=device)
        with pytest.raises(ValueError, match="device"):
            fdist.langevin(P.GMM.grad_log_prob, (2,), num_chains=2, step_size=0.1, n_steps=1, seed=0, device=device)
    with pytest.raises(ValueError, match="device"):
        fdist.sample(P.GMM.denoiser, (2,), P.SIGMAS, num_samples=2, seed=0, device="not-a-device")
    with pytest.raises(TypeError, match="device"):
        fdist.sample(P.GMM.denoiser, (2,), P.SIGMAS, num_samples=2, seed=0, device=1.5)
    assert fdist.sample(P.GMM.denoiser, (2,), P.SIGMAS, num_samples=2, seed=0, device="cpu").shape == (2, 2)


# ------------------------------------------------------------------------------------------------------------
# a lost launcher, and two runs in one out_dir


def _shards(d):
    return sorted(f for f in os.listdir(d) if f.startswith("shard-"))


def test_lost_launcher_stops_the_run_before_the_next_shard(tmp_path, monkeypatch):
    import fastdiff.distributed._comm as comm

    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")  # as under torchrun: the parent is the agent
    monkeypatch.setattr(comm, "_WATCH_INTERVAL_S", 3600.0)  # the main thread's check, not the watchdog
    parent = {"pid": 4242}
    monkeypatch.setattr(comm, "_getppid", lambda: parent["pid"])

    def agent_dies(info):
        parent["pid"] = 1  # re-parented to init: the agent was killed

    with pytest.raises(fdist.DistributedRunError, match=r"launcher .*pid 4242.* is gone"):
        fdist.sample(P.GMM.denoiser, (2,), P.SIGMAS, num_samples=6, seed=0, batch_size=2, out_dir=tmp_path,
                     on_error="raise", callback=agent_dies)
    assert _shards(tmp_path) == [_shard_name(0, 2)]  # nothing written after the loss was noticed
    assert not (tmp_path / ".fastdiff-run.lock").exists()  # released on the way out
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    # the rows computed so far are kept; a new run completes the job
    fdist.sample(P.GMM.denoiser, (2,), P.SIGMAS, num_samples=6, seed=0, batch_size=2, out_dir=tmp_path)
    assert fdist.load_shards(tmp_path).shape == (6, 2)


def _pid_gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_orphaned_worker_exits_when_its_launcher_is_killed(tmp_path):
    """A worker whose launcher got SIGKILL notices within about a second and exits without writing more."""
    import signal

    out, pid_file = tmp_path / "out", tmp_path / "worker.pid"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("TORCHELASTIC_RUN_ID", None)
    launcher = subprocess.Popen([sys.executable, os.path.join(SCRIPTS, "orphan_job.py"), "launcher", str(out),
                                 str(pid_file)], env=env)
    worker = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (out.exists() and _shards(out)):
            time.sleep(0.1)
        assert out.exists() and _shards(out), "the worker never wrote a shard"
        worker = int(pid_file.read_text())
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(10)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 15 and not _pid_gone(worker):
            time.sleep(0.1)
        assert _pid_gone(worker), "the orphaned worker is still running 15 s after its launcher died"
        written = _shards(out)
        time.sleep(1.0)
        assert _shards(out) == written and len(written) < 200
    finally:
        if launcher.poll() is None:
            launcher.kill()
        if worker is not None and not _pid_gone(worker):
            os.kill(worker, 9)


def _write_lock(d, **fields):
    import socket

    rec = {"pid": os.getpid(), "host": socket.gethostname(), "token": "other", "created": "earlier", **fields}
    d.mkdir(exist_ok=True)
    (d / ".fastdiff-run.lock").write_text(json.dumps(rec))


def test_out_dir_held_by_a_live_run_is_refused(tmp_path):
    d = tmp_path / "run"
    args = dict(num_samples=4, seed=0, batch_size=2, out_dir=d)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(d, pid=sleeper.pid)  # another process, alive, holds the directory
        with pytest.raises(ValueError, match=rf"in use by another run \(process {sleeper.pid}"):
            fdist.sample(P.GMM.denoiser, (2,), P.SIGMAS, **args)
        assert not _shards(d) and not (d / fdist.MANIFEST_NAME).exists()
        _write_lock(d, host="some-other-host")  # cannot be checked from here: refused, naming the file
        with pytest.raises(ValueError, match=r"some-other-host(.|\n)*delete .*\.fastdiff-run\.lock"):
            fdist.sample(P.GMM.denoiser, (2,), P.SIGMAS, **args)
    finally:
        sleeper.kill()
        sleeper.wait()
    _write_lock(d, pid=sleeper.pid)  # its writer is dead now: taken over
    assert len(fdist.sample(P.GMM.denoiser, (2,), P.SIGMAS, **args)) == 2
    assert not (d / ".fastdiff-run.lock").exists()  # released at the end


def test_a_run_whose_out_dir_was_taken_over_stops_writing(tmp_path):
    def take_over(info):
        _write_lock(tmp_path, token="a newer run")

    with pytest.raises(fdist.DistributedRunError, match="another run has claimed"):
        fdist.sample(P.GMM.denoiser, (2,), P.SIGMAS, num_samples=6, seed=0, batch_size=2, out_dir=tmp_path,
                     callback=take_over)
    assert _shards(tmp_path) == [_shard_name(0, 2)]
    assert (tmp_path / ".fastdiff-run.lock").exists()  # the newer run's lock is left alone


def test_sampler_spellings_resolve_to_the_canonical_name(tmp_path):
    """``sampler="DPM++ 2M"`` runs as ``"dpmpp_2m"`` and the manifest records the canonical name, so a resume
    spelled either way is the same run."""
    gmm, sig = P.GMM, P.SIGMAS
    a = fdist.sample(gmm.denoiser, (2,), sig, num_samples=4, seed=3, sampler="DPM++ 2M")
    b = fdist.sample(gmm.denoiser, (2,), sig, num_samples=4, seed=3, sampler="dpmpp_2m")
    assert torch.equal(a, b)
    d = tmp_path / "run"
    fdist.sample(gmm.denoiser, (2,), sig, num_samples=4, seed=3, sampler="DPM++ 2M", out_dir=d)
    assert json.loads((d / "manifest.json").read_text())["config"]["sampler"] == "dpmpp_2m"
    fdist.sample(gmm.denoiser, (2,), sig, num_samples=4, seed=3, sampler="dpmpp_2m", out_dir=d)  # resumes
    assert torch.equal(fdist.load_shards(d), a)
