#!/usr/bin/env python3
"""bench_torch_adam.py -- PyTorch's Adam on tfps's model and data: the
accuracy a user would get from PyTorch, for tests/bench_cluster.sh to compare
tfps's Adam (local mode and a sync cluster) against.

    python3 tests/bench_torch_adam.py DATA_DIR [EPOCHS=10] [BATCH=64] [LR=0.001] [SEED=1]

Same as tfps: model 784-300-100-10 (Linear/ReLU, softmax cross-entropy, batch
mean), Glorot-uniform kernels and zero biases (TF's Dense defaults, tfps's
init), pixels / 255, the four IDX files of DATA_DIR (gzip or raw), a fresh
shuffle every epoch, the last batch of an epoch keeps the remainder, Adam
with Keras's defaults (beta1 0.9, beta2 0.999, epsilon 1e-7), one thread.
Prints one machine-readable line:

  torch_adam epochs=10 batch=64 lr=0.001 test_accuracy=0.9512 train_s=12.3
"""
import gzip
import os
import struct
import sys
import time

import torch


def read_idx(path):
    """An IDX file (or its .gz) as a uint8 tensor of its dimensions; bench_torch_rpc.py uses it too."""
    for p in (path + ".gz", path):
        if os.path.exists(p):
            opener = gzip.open if p.endswith(".gz") else open
            with opener(p, "rb") as f:
                data = f.read()
            break
    else:
        sys.exit(f"{os.path.basename(sys.argv[0])}: {path}[.gz] not found: fetch the data with deploy/get-data.sh")
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    t = torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8)
    return t.reshape(dims)


def main():
    a = sys.argv[1:]
    if not a:
        sys.exit(__doc__)
    data = a[0]
    epochs = int(a[1]) if len(a) > 1 else 10
    batch = int(a[2]) if len(a) > 2 else 64
    lr = float(a[3]) if len(a) > 3 else 0.001
    seed = int(a[4]) if len(a) > 4 else 1
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    xs = read_idx(os.path.join(data, "train-images-idx3-ubyte")).reshape(-1, 784).float() / 255.0
    ys = read_idx(os.path.join(data, "train-labels-idx1-ubyte")).long()
    xt = read_idx(os.path.join(data, "t10k-images-idx3-ubyte")).reshape(-1, 784).float() / 255.0
    yt = read_idx(os.path.join(data, "t10k-labels-idx1-ubyte")).long()
    model = torch.nn.Sequential(torch.nn.Linear(784, 300), torch.nn.ReLU(), torch.nn.Linear(300, 100),
                                torch.nn.ReLU(), torch.nn.Linear(100, 10))
    for m in model:
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(m.weight)   # Glorot uniform
            torch.nn.init.zeros_(m.bias)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-7)
    lossf = torch.nn.CrossEntropyLoss()
    n = xs.shape[0]
    t0 = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(n)
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            opt.zero_grad()
            loss = lossf(model(xs[idx]), ys[idx])
            loss.backward()
            opt.step()
    train_s = time.perf_counter() - t0
    with torch.no_grad():
        acc = (model(xt).argmax(1) == yt).float().mean().item()
    print(f"torch_adam epochs={epochs} batch={batch} lr={lr} test_accuracy={acc:.4f} train_s={train_s:.1f}")


if __name__ == "__main__":
    main()
