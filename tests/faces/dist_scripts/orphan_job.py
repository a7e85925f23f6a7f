"""A launcher and its worker, for the lost-launcher test of tests/faces/test_distributed.py.

    python orphan_job.py launcher OUT_DIR PID_FILE   # starts the worker, writes its pid, then sleeps
    python orphan_job.py worker OUT_DIR               # a slow shard run that watches its parent

The test kills the launcher with SIGKILL (as an OOM killer or ``kill -9`` of a torchrun agent would) and
checks that the worker exits on its own, without writing further shards.
"""
import os
import subprocess
import sys
import time


def main() -> None:
    role, out_dir = sys.argv[1], sys.argv[2]
    if role == "launcher":
        env = dict(os.environ, FASTDIFF_WATCH_PARENT="1")
        child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "worker", out_dir], env=env)
        with open(sys.argv[3] + ".tmp", "w") as f:
            f.write(str(child.pid))
        os.replace(sys.argv[3] + ".tmp", sys.argv[3])
        time.sleep(600)
        return
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import dist_problem as P

    import fastdiff.distributed as fdist

    fdist.sample(P.GMM.denoiser, (2,), P.SIGMAS, num_samples=200, seed=0, batch_size=1, out_dir=out_dir,
                 callback=lambda info: time.sleep(0.3))


if __name__ == "__main__":
    main()
