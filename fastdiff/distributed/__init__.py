"""Large-batch sampling over many GPUs and machines on ``torch.distributed``, resumable and world-size invariant.

Every sample (or Langevin chain) has a global row id ``0 .. num_samples-1``. Its
starting noise and every later noise draw are Philox numbers keyed by
``(seed, row id, stream)``, so a row's result depends only on ``(seed, row id)``:
the same rows come out whatever the number of ranks or the per-rank batch size.
Ranks take contiguous shares of the rows (uneven shares allowed) and work through
them in micro-batches of ``batch_size`` rows. The result is either gathered to
every rank (a ``(num_samples, *sample_shape)`` tensor) or, with ``out_dir``,
written as shard files (one per micro-batch, named by row range, written to a
temporary file and renamed into place) next to a ``manifest.json`` holding the
run's configuration. A restarted run checks the manifest (a different
configuration is refused), keeps the shards already on disk and computes only
the missing rows, so no row is lost or duplicated.

Launch with ``torchrun`` and call :func:`init_distributed` first (NCCL on GPUs,
gloo on CPU); without an initialised process group everything runs as world
size 1. Ranks stay in step: after each micro-batch they exchange a small status
message, so a rank that raises stops every rank at once, and a rank that dies or
hangs is noticed within ``timeout`` seconds; by default (``on_error="abort"``)
every rank then logs the cause and exits with status 1 instead of hanging.

A rank also watches the process that launched it (the torchrun agent): if that
process dies, the rank exits with status 1 within about a second, from a
background thread, even while blocked in a collective or in the model, and
writes no further shard. To stop a job, kill the torchrun agent (or its whole
process group, ``kill -- -PGID``); the workers follow. While a run writes into
``out_dir``, rank 0 holds ``out_dir/.fastdiff-run.lock`` (host, pid, run token):
another run into the same directory is refused while that process is alive (or
when the lock comes from another host: delete the file once no run is active),
and a lock left by a dead process is taken over. A rank whose ``out_dir`` was
claimed by a newer run stops before its next shard.

Everything is imported from here; the code lives in one private module per job:
``_api`` (:func:`sample`, :func:`langevin`), ``_run`` (the engine both share),
``_plan`` (which rows each rank computes), ``_shards`` (shard files, manifest,
resume, :func:`load_shards`) and ``_comm`` (process group, status exchange,
failure handling).

Example (``torchrun --nproc_per_node=8 gen.py``)::

    import fastdiff, fastdiff.distributed as fdist
    fdist.init_distributed()
    gmm = fastdiff.toy.GaussianMixture.ring(k=8)
    sigmas = fastdiff.karras_sigmas(32, 0.002, 80.0)
    paths = fdist.sample(gmm.denoiser, (2,), sigmas, num_samples=50_000, seed=0,
                         batch_size=4096, out_dir="samples/")
    x = fdist.load_shards("samples/")          # (50000, 2), identical for any world size
"""
from ._api import langevin, sample
from ._comm import DistributedRunError, init_distributed
from ._plan import row_shares
from ._shards import MANIFEST_NAME, load_shards

__all__ = ["sample", "langevin", "load_shards", "init_distributed", "row_shares", "DistributedRunError",
           "MANIFEST_NAME"]
