#!/usr/bin/env python3
"""bench_torch_rpc.py -- a PyTorch RPC parameter server on tfps's model and
data, as the baseline tests/bench_cluster.sh (BENCH_ONLY=torch_rpc) sets tfps's
async clusters against.

    python3 tests/bench_torch_rpc.py DATA_DIR [--workers W=1] [--epochs E=1 | --steps N]
        [--batch 64] [--lr 0.1] [--seed 1] [--variant pull-push|fused|fused-overlap]
        [--warmup 20] [--timeout 600] [--rpc-threads 8] [--transports LIST]

Processes (one python3 each, started and watched by this one): rank 0 the
parameter server, ranks 1..W the workers; torch.distributed.rpc with the
TensorPipe backend on 127.0.0.1, every process torch.set_num_threads(1).

  ps      holds the flat fp32 parameters (one tensor, tfps's layout
          W1[784][300] b1 W2[300][100] b2 W3[100][10] b3 and tfps's initial
          values: Glorot-uniform from the same hash, zero biases) and applies
          async SGD, w -= lr * g, to each push under a lock; pulls return a
          copy taken under the same lock. At the end it evaluates its final
          weights on the test set.
  worker  per step (--variant):
            pull-push      rpc_sync pull, forward/backward, rpc_sync push:
                           two RPCs per step (tfps --pushpull 0 --overlap 0)
            fused          one rpc_sync per step that pushes this step's
                           gradient and returns the updated weights
                           (tfps --pushpull 1 --overlap 0)
            fused-overlap  the fused RPC sent with rpc_async while the next
                           step computes on the weights the previous one
                           returned, one in flight (tfps's default
                           --pushpull 1 --overlap 1: async with staleness 1)
          forward/backward with torch autograd (CPU): Linear/ReLU x2, Linear,
          softmax cross-entropy (batch mean); the gradient goes back as one
          flat tensor in the same layout.

Data as tfps: the four IDX files of DATA_DIR (gzip or raw), pixels / 255
converted per batch from the uint8 images; worker k of W takes examples
k, k + W, k + 2W, ... (tfps's shard) and reshuffles them every epoch with
tfps's own generator (splitmix64 Fisher-Yates, seed, epoch and worker index:
the same batches, in the same order, as tfps worker k); the last batch of an
epoch keeps the remainder; steps per worker = ceil(shard / batch) * epochs.

Timing (time.monotonic, one clock for all processes of the machine):
examples_per_s counts the steps after each worker's first --warmup steps,
from the earliest worker's end of warm-up to the last worker's last push;
examples_per_s_all counts every step from the earliest first pull (tfps's
summary.json measures this way: every example over the training time).
cpu_ms_per_step: CPU time (every thread, user + system) of all the
processes over training (workers: first pull to last push; the ps: from its
RPC start to the last worker's report), per step: what the exchange costs
whatever else the machine runs. rpc_ms_per_step: a worker's time in RPC
calls per step (fused-overlap: waiting for the one in flight).
Prints one machine-readable line:

  torch_rpc variant=pull-push workers=1 steps=125 batch=64 lr=0.1 examples_per_s=... \
      examples_per_s_all=... test_accuracy=0.9612 test_loss=... pushes=938 train_s=...

Exits 77 with "bench_torch_rpc: SKIP: ..." when torch or torch.distributed.rpc
(TensorPipe) is unavailable, 1 on a failure or when --timeout seconds (the
whole run) pass: the children are killed, nothing waits unbounded.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SKIP = 77
IN, H1, H2, OUT = 784, 300, 100, 10
PS = "ps"


# ---------------------------------------------------------------- tfps's data, init and batches

def load(data, which):
    from bench_torch_adam import read_idx   # (imports torch: only once the benchmark runs)
    x = read_idx(os.path.join(data, f"{which}-images-idx3-ubyte"))
    y = read_idx(os.path.join(data, f"{which}-labels-idx1-ubyte")).long()
    return x.reshape(x.shape[0], -1), y


def layout():
    sizes = [IN * H1, H1, H1 * H2, H2, H2 * OUT, OUT]
    offs, o = [], 0
    for s in sizes:
        offs.append(o)
        o += s
    return offs, sizes, o


M64 = (1 << 64) - 1


def tfps_init(seed):
    """common/layout.c tfps_layout_init_value, vectorised: the same floats."""
    import numpy as np
    import torch
    offs, sizes, total = layout()

    def mix64(z):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xbf58476d1ce4e5b9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94d049bb133111eb)
        return z ^ (z >> np.uint64(31))

    with np.errstate(over="ignore"):
        s = int(mix64(np.array([(seed + 0x9e3779b97f4a7c15) & M64], dtype=np.uint64))[0])
        r = mix64(np.uint64(s) ^ np.arange(total, dtype=np.uint64))
    u = (r >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    out = np.zeros(total, dtype=np.float32)
    for var, (fi, fo) in ((0, (IN, H1)), (2, (H1, H2)), (4, (H2, OUT))):
        a = np.float32(np.sqrt(6.0 / (fi + fo)))   # glorot_limit returns a float
        sl = slice(offs[var], offs[var] + sizes[var])
        out[sl] = ((2.0 * u[sl] - 1.0) * np.float64(a)).astype(np.float32)
    return torch.from_numpy(out)


def tfps_epoch_order(n_train, worker, workers, seed, epoch):
    """worker/data.c shuffle_epoch: the shard worker + i * workers, Fisher-Yates
    with splitmix64 seeded by (seed, epoch, worker)."""
    import numpy as np
    n = (n_train - worker + workers - 1) // workers
    order = list(range(worker, worker + n * workers, workers))
    s0 = ((seed * 0x100000001b3) & M64) ^ ((epoch << 20) & M64) ^ worker
    # splitmix64's k-th output is a function of s0 + k * gamma: all n - 1 draws at once
    with np.errstate(over="ignore"):
        k = np.arange(1, n, dtype=np.uint64)
        z = np.uint64(s0) + k * np.uint64(0x9e3779b97f4a7c15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xbf58476d1ce4e5b9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94d049bb133111eb)
        z = z ^ (z >> np.uint64(31))
    i = np.arange(n - 1, 0, -1, dtype=np.uint64)
    j = (z % (i + np.uint64(1))).tolist()
    for ii, jj in zip(range(n - 1, 0, -1), j):
        order[ii], order[jj] = order[jj], order[ii]
    return order


def forward(w, x):
    import torch
    offs, sizes, _ = layout()
    p = [w[o:o + s] for o, s in zip(offs, sizes)]
    h = torch.relu(torch.addmm(p[1], x, p[0].view(IN, H1)))
    h = torch.relu(torch.addmm(p[3], h, p[2].view(H1, H2)))
    return torch.addmm(p[5], h, p[4].view(H2, OUT))


# ---------------------------------------------------------------- the parameter server (rank 0)

class _PS:
    lock = threading.Lock()
    w = None
    lr = 0.1
    pushes = 0
    examples = 0
    reports = []
    done = threading.Condition(lock)


def ps_pull():
    with _PS.lock:
        return _PS.w.clone()


def ps_push(g, n):
    with _PS.lock:
        _PS.w.add_(g, alpha=-_PS.lr)
        _PS.pushes += 1
        _PS.examples += n
    return None


def ps_push_pull(g, n):
    with _PS.lock:
        _PS.w.add_(g, alpha=-_PS.lr)
        _PS.pushes += 1
        _PS.examples += n
        return _PS.w.clone()


def ps_report(stats):
    with _PS.lock:
        _PS.reports.append(stats)
        _PS.done.notify_all()
    return None


# ---------------------------------------------------------------- children

def rpc_options(a):
    import torch.distributed.rpc as rpc
    kw = dict(init_method=f"tcp://127.0.0.1:{a.port}", num_worker_threads=a.rpc_threads,
              rpc_timeout=a.rpc_timeout)
    if a.transports:
        kw["_transports"] = a.transports.split(",")
    return rpc.TensorPipeRpcBackendOptions(**kw)


def child_guard(deadline):
    """Die with the launcher (PR_SET_PDEATHSIG) and at the deadline, whatever blocks."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except Exception:
        pass
    if os.getppid() == 1:
        os._exit(3)
    t = threading.Timer(max(1.0, deadline - time.time()), lambda: (
        sys.stderr.write("bench_torch_rpc: child deadline passed\n"), sys.stderr.flush(), os._exit(3)))
    t.daemon = True
    t.start()


def run_ps(a):
    import torch
    import torch.distributed.rpc as rpc
    import torch.nn.functional as F
    torch.set_num_threads(1)
    xt, yt = load(a.data, "t10k")
    _PS.w = tfps_init(a.seed)
    _PS.lr = a.lr
    rpc.init_rpc(PS, rank=0, world_size=a.workers + 1, rpc_backend_options=rpc_options(a))
    cpu0 = time.process_time()   # every thread of the process: the RPC threads that run the pulls and pushes
    with _PS.lock:
        ok = _PS.done.wait_for(lambda: len(_PS.reports) == a.workers, timeout=max(1.0, a.deadline - time.time()))
    ps_cpu = time.process_time() - cpu0
    if not ok:
        sys.exit("bench_torch_rpc: ps: the workers did not all report before the deadline")
    rpc.shutdown()
    with torch.no_grad():
        logits = forward(_PS.w, xt.float().div_(255.0))
        acc = (logits.argmax(1) == yt).float().mean().item()
        loss = F.cross_entropy(logits, yt).item()
    r = _PS.reports
    t_warm = min(s["t_warm"] for s in r)
    t_first = min(s["t_first"] for s in r)
    t_end = max(s["t_end"] for s in r)
    timed = sum(s["timed_examples"] for s in r)
    ex = sum(s["examples"] for s in r)
    res = dict(variant=a.variant, workers=a.workers, steps=sum(s["steps"] for s in r), batch=a.batch, lr=a.lr,
               examples_per_s=timed / (t_end - t_warm) if t_end > t_warm and timed else 0.0,
               examples_per_s_all=ex / (t_end - t_first), test_accuracy=acc, test_loss=loss,
               pushes=_PS.pushes, examples=_PS.examples, train_s=t_end - t_first,
               rpc_s_per_step=sum(s["rpc_s"] for s in r) / max(1, sum(s["steps"] for s in r)),
               final_loss=r[0]["loss"], torch=torch.__version__,
               cpu_s=ps_cpu + sum(s["cpu_s"] for s in r), ps_cpu_s=ps_cpu)
    with open(a.result, "w") as f:
        json.dump(res, f)


def run_worker(a):
    import torch
    import torch.distributed.rpc as rpc
    import torch.nn.functional as F
    torch.set_num_threads(1)
    k, W = a.rank - 1, a.workers
    xs, ys = load(a.data, "train")
    n_train = xs.shape[0]
    shard = (n_train - k + W - 1) // W
    per_epoch = (shard + a.batch - 1) // a.batch
    total = a.steps if a.steps > 0 else per_epoch * a.epochs
    epochs_needed = (total + per_epoch - 1) // per_epoch
    batches = []   # index tensors for every step, before the clock starts
    for e in range(epochs_needed):
        order = torch.tensor(tfps_epoch_order(n_train, k, W, a.seed, e), dtype=torch.long)
        batches += list(torch.split(order, a.batch))
    batches = batches[:total]
    offs, sizes, _ = layout()

    def grad(w, idx):
        x = xs[idx].float().div_(255.0)   # as tfps_gather: per batch
        y = ys[idx]
        p = [w[o:o + s].detach().requires_grad_() for o, s in zip(offs, sizes)]   # leaves, no copies
        h = torch.relu(torch.addmm(p[1], x, p[0].view(IN, H1)))
        h = torch.relu(torch.addmm(p[3], h, p[2].view(H1, H2)))
        loss = F.cross_entropy(torch.addmm(p[5], h, p[4].view(H2, OUT)), y)
        loss.backward()
        return torch.cat([q.grad for q in p]), loss.item(), idx.numel()

    rpc.init_rpc(f"worker{a.rank}", rank=a.rank, world_size=W + 1, rpc_backend_options=rpc_options(a))
    warm = min(a.warmup, total - 1) if total > 1 else 0
    rpc_s, examples, timed, loss = 0.0, 0, 0, float("nan")
    t_first = time.monotonic()
    cpu0 = time.process_time()
    t_warm = t_first
    w = rpc.rpc_sync(PS, ps_pull)
    fut = None
    for step in range(total):
        if step == warm:
            if fut is not None:   # the warm-up's last exchange counts in the warm-up
                w = fut.wait()
                fut = None
            t_warm = time.monotonic()
        g, loss, n = grad(w, batches[step])
        t0 = time.monotonic()
        if a.variant == "pull-push":
            rpc.rpc_sync(PS, ps_push, args=(g, n))
            if step + 1 < total:
                w = rpc.rpc_sync(PS, ps_pull)
        elif a.variant == "fused":
            w = rpc.rpc_sync(PS, ps_push_pull, args=(g, n))
        else:   # fused-overlap: take the weights the previous exchange returned, send this step's gradient
            if fut is not None:
                w = fut.wait()
            fut = rpc.rpc_async(PS, ps_push_pull, args=(g, n))
        rpc_s += time.monotonic() - t0
        examples += n
        if step >= warm:
            timed += n
    if fut is not None:
        fut.wait()
    t_end = time.monotonic()
    cpu_s = time.process_time() - cpu0
    rpc.rpc_sync(PS, ps_report, args=(dict(rank=a.rank, steps=total, examples=examples, timed_examples=timed,
                                           t_first=t_first, t_warm=t_warm, t_end=t_end, rpc_s=rpc_s,
                                           loss=loss, cpu_s=cpu_s),))
    rpc.shutdown()


# ---------------------------------------------------------------- the launcher

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(a):
    try:
        import torch
        import torch.distributed.rpc as rpc
    except Exception as e:   # ImportError, or a broken install
        print(f"bench_torch_rpc: SKIP: cannot import torch / torch.distributed.rpc ({type(e).__name__}: {e})")
        return SKIP
    if not rpc.is_available() or not hasattr(rpc, "TensorPipeRpcBackendOptions"):
        print(f"bench_torch_rpc: SKIP: torch {torch.__version__} has no torch.distributed.rpc with TensorPipe")
        return SKIP
    try:
        import numpy  # noqa: F401  (tfps's init and shuffle, vectorised)
    except ImportError:
        print("bench_torch_rpc: SKIP: numpy is missing")
        return SKIP
    for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte"):
        p = os.path.join(a.data, f)
        if not (os.path.exists(p) or os.path.exists(p + ".gz")):
            print(f"bench_torch_rpc: {p}[.gz] not found: fetch the data with deploy/get-data.sh", file=sys.stderr)
            return 1
    tmp = tempfile.mkdtemp(prefix="bench_torch_rpc.")
    result = os.path.join(tmp, "result.json")
    deadline = time.time() + a.timeout
    env = dict(os.environ)
    env.setdefault("TP_SOCKET_IFNAME", "lo")   # TensorPipe's TCP on loopback, as tfps's 127.0.0.1
    env.setdefault("GLOG_minloglevel", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    common = [sys.executable, os.path.abspath(__file__), a.data, "--workers", str(a.workers), "--epochs",
              str(a.epochs), "--steps", str(a.steps), "--batch", str(a.batch), "--lr", repr(a.lr), "--seed",
              str(a.seed), "--variant", a.variant, "--warmup", str(a.warmup), "--rpc-threads", str(a.rpc_threads),
              "--rpc-timeout", repr(a.rpc_timeout), "--port", str(free_port()), "--deadline", repr(deadline),
              "--result", result] + (["--transports", a.transports] if a.transports else [])
    procs, logs = [], []
    stopping = []

    def kill_all():
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def on_signal(sig, _frame):
        stopping.append(sig)
        kill_all()
        sys.exit(128 + sig)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        for rank in range(a.workers + 1):
            log = open(os.path.join(tmp, f"rank{rank}.log"), "w+")
            logs.append(log)
            role = "ps" if rank == 0 else "worker"
            procs.append(subprocess.Popen(common + ["--role", role, "--rank", str(rank)], stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
        failed = None
        while True:
            codes = [p.poll() for p in procs]
            bad = [i for i, c in enumerate(codes) if c not in (None, 0)]
            if bad:
                failed = f"rank {bad[0]} exited {codes[bad[0]]}"
                break
            if all(c == 0 for c in codes):
                break
            if time.time() > deadline:
                failed = f"--timeout {a.timeout:g} s passed"
                break
            time.sleep(0.1)
        if failed:
            kill_all()
            print(f"bench_torch_rpc: failed: {failed}", file=sys.stderr)
            for rank, log in enumerate(logs):
                log.seek(0)
                tail = log.read().splitlines()[-8:]
                print(f"--- rank {rank} ({'ps' if rank == 0 else 'worker'}) log tail:", file=sys.stderr)
                for line in tail:
                    print("  " + line, file=sys.stderr)
            return 1
        with open(result) as f:
            r = json.load(f)
    finally:
        kill_all()
        for log in logs:
            log.close()
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)
    print(f"torch_rpc variant={r['variant']} workers={r['workers']} steps={r['steps']} batch={r['batch']} "
          f"lr={r['lr']:g} examples_per_s={r['examples_per_s']:.0f} examples_per_s_all={r['examples_per_s_all']:.0f} "
          f"test_accuracy={r['test_accuracy']:.4f} test_loss={r['test_loss']:.4f} pushes={r['pushes']} "
          f"examples={r['examples']} train_s={r['train_s']:.2f} rpc_ms_per_step={r['rpc_s_per_step'] * 1e3:.3f} "
          f"cpu_ms_per_step={r['cpu_s'] * 1e3 / r['steps']:.3f} ps_cpu_s={r['ps_cpu_s']:.2f} "
          f"torch={r['torch']} transports={a.transports or 'default'}")
    if r["pushes"] != r["steps"]:
        print(f"bench_torch_rpc: the ps applied {r['pushes']} pushes for {r['steps']} steps", file=sys.stderr)
        return 1
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", nargs="?", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data",
                                                          "mnist"))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--steps", type=int, default=0, help="steps per worker; 0 = as --epochs gives (as tfps)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--variant", choices=("pull-push", "fused", "fused-overlap"), default="pull-push")
    p.add_argument("--warmup", type=int, default=20, help="steps per worker left out of examples_per_s")
    p.add_argument("--timeout", type=float, default=600, help="seconds for the whole run; then every child is killed")
    p.add_argument("--rpc-threads", type=int, default=8, help="TensorPipe num_worker_threads per process")
    p.add_argument("--rpc-timeout", type=float, default=60, help="seconds per RPC")
    p.add_argument("--transports", default="", help="TensorPipe _transports, e.g. uv (TCP) or shm,uv; default: its own")
    # internal: the children
    p.add_argument("--role", choices=("ps", "worker"), help=argparse.SUPPRESS)
    p.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=0, help=argparse.SUPPRESS)
    p.add_argument("--result", default="", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.workers < 1 or a.epochs < 1 or a.steps < 0 or a.batch < 1 or a.warmup < 0 or a.timeout <= 0:
        p.error("workers, epochs, batch >= 1; steps, warmup >= 0; timeout > 0")
    if a.role is None:
        return launch(a)
    child_guard(a.deadline)
    (run_ps if a.role == "ps" else run_worker)(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
