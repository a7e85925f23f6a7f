"""torchrun worker for tests/faces/test_distributed.py: runs the named jobs and saves each rank's result.

    python -m torch.distributed.run --standalone --nproc_per_node=2 run_job.py \
        --jobs sample,langevin --rows 12 --batch-size 4 --results DIR [--out-dir DIR] [--timeout S]
        [--fail JOB:RANK:AFTER:MODE]

Jobs with ``_dir`` in their name write shards under ``--out-dir/JOB``; the others gather.
"""
import argparse
import os

import torch
import torch.distributed as dist

import fastdiff.distributed as fdist
import dist_problem as problem


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", required=True)  # comma list of sample, langevin, sample_dir, langevin_dir
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--results", required=True)
    p.add_argument("--out-dir", default=None)
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--seed", type=int, default=problem.SEED)
    p.add_argument("--fail", default=None, help="job:rank:after:mode -- inject a failure into that job")
    a = p.parse_args()
    rank, world = fdist.init_distributed()
    assert world == int(os.environ["WORLD_SIZE"]), "the process group was not set up"
    for job in a.jobs.split(","):
        problem.reset()
        if a.fail and a.fail.split(":", 1)[0] == job:
            os.environ["FASTDIFF_TEST_FAIL"] = a.fail.split(":", 1)[1]
        run = problem.run_sample if job.startswith("sample") else problem.run_langevin
        out_dir = os.path.join(a.out_dir, job) if "_dir" in job else None
        res = run(a.rows, a.batch_size, out_dir=out_dir, seed=a.seed, timeout=a.timeout)
        torch.save(res, os.path.join(a.results, f"{job}.rank{rank}.pt"))
        if out_dir is not None and rank == 0:
            torch.save(fdist.load_shards(out_dir), os.path.join(a.results, f"{job}.loaded.pt"))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
