"""The plain PyTorch GPTQ solve (the paper's per-column loop with lazy blocks of 128, float32),
on the weights and Hessians that gptq_solver_bench wrote, on the same GPU. Prints one JSON line
per case: seconds (best of 3) and the loss, computed as the paper does.

usage: gptq_reference.py CASES.safetensors [--device cuda]
"""
import json
import sys
import time

import torch
from safetensors.torch import load_file


def scale_zero(w, bits):
    maxq = 2**bits - 1
    xmin = torch.clamp(w.min(1).values, max=0)
    xmax = torch.clamp(w.max(1).values, min=0)
    flat = (xmin == 0) & (xmax == 0)
    xmin[flat], xmax[flat] = -1, 1
    scale = (xmax - xmin) / maxq
    return scale, torch.round(-xmin / scale)


def gptq(w, h, bits=4, group=128, block=128, damp=0.01):
    w = w.clone().float()
    h = h.clone().float()
    cols = w.shape[1]
    maxq = 2**bits - 1
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h += torch.eye(cols, device=h.device) * damp * torch.mean(torch.diag(h))
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    losses = torch.zeros(w.shape[0], device=w.device)
    q_all = torch.zeros_like(w)
    scale = zero = None
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            wc = w1[:, i]
            d = hinv1[i, i]
            if col % group == 0:
                scale, zero = scale_zero(w[:, col:col + group], bits)
            q = torch.clamp(torch.round(wc / scale) + zero, 0, maxq)
            deq = scale * (q - zero)
            q_all[:, col] = deq
            losses += (wc - deq) ** 2 / d**2 / 2
            err = (wc - deq) / d
            w1[:, i:] -= err.unsqueeze(1).matmul(hinv1[i, i:].unsqueeze(0))
            err1[:, i] = err
        w[:, i2:] -= err1.matmul(hinv[i1:i2, i2:])
    return q_all, losses.sum().item()


def main():
    path = sys.argv[1]
    device = sys.argv[sys.argv.index("--device") + 1] if "--device" in sys.argv else "cuda"
    tensors = load_file(path, device=device)
    for name in [n[: -len(".weight")] for n in tensors if n.endswith(".weight")]:
        w = tensors[name + ".weight"]
        h = tensors["hessian.%d" % w.shape[1]]
        best, loss = 1e30, None
        for _ in range(3):
            torch.cuda.synchronize()
            start = time.perf_counter()
            _, loss = gptq(w, h)
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        print(json.dumps({"case": name, "seconds": best, "loss": loss}), flush=True)


if __name__ == "__main__":
    main()
