"""The obvious alternative to Squeeze's distill stage: Hugging Face transformers'
LlamaForCausalLM (SDPA attention) with the same KD loss in a plain PyTorch loop, the same shapes,
batch, sequence, precision (bf16 weights) and optimizer. Prints student tokens/s and MFU."""
import argparse
import json
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, head_dim=64),
    "3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
               num_attention_heads=24, num_key_value_heads=8, head_dim=128),
}


def config(name):
    return LlamaConfig(vocab_size=128256, rope_theta=500000.0, max_position_embeddings=8192,
                       rms_norm_eps=1e-5, tie_word_embeddings=True, **SHAPES[name])


def forward_flops_per_token(c, seq):
    h, q = c.hidden_size, c.num_attention_heads * c.head_dim
    kv, f = c.num_key_value_heads * c.head_dim, c.intermediate_size
    per_layer = 2 * (h * q + 2 * h * kv + q * h + 3 * h * f) + 4.0 * seq * q
    return c.num_hidden_layers * per_layer + 2.0 * h * c.vocab_size


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--student", default="1b")
    p.add_argument("--teacher", default="3b")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--profile", action="store_true",
                   help="print the GPU time of the top operators over the measured steps")
    a = p.parse_args()
    tc, sc = config(a.teacher), config(a.student)
    teacher = LlamaForCausalLM._from_config(tc, attn_implementation="sdpa").to("cuda", torch.bfloat16).eval()
    student = LlamaForCausalLM._from_config(sc, attn_implementation="sdpa").to("cuda", torch.bfloat16)
    student.train()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    temperature, alpha = 2.0, 0.5
    times = []
    profiler = None
    for i in range(a.warmup + a.steps):
        if a.profile and i == a.warmup:
            profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])
            profiler.__enter__()
        start = time.perf_counter()
        ids = torch.randint(0, sc.vocab_size, (a.batch, a.seq + 1), device="cuda")
        inputs, labels = ids[:, :-1], ids[:, 1:]
        with torch.no_grad():
            t_logits = teacher(input_ids=inputs).logits
        s_logits = student(input_ids=inputs).logits
        v = s_logits.size(-1)
        s = s_logits.float().reshape(-1, v)
        t = t_logits.float().reshape(-1, v)
        ce = F.cross_entropy(s, labels.reshape(-1))
        kd = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1),
                      log_target=True, reduction="batchmean") * temperature ** 2
        loss = alpha * kd + (1 - alpha) * ce
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        times.append(time.perf_counter() - start)
    if profiler is not None:
        profiler.__exit__(None, None, None)
        print(profiler.key_averages().table(sort_by="cuda_time_total", row_limit=30))
    seconds = sum(times[a.warmup:])
    tps = a.steps * a.batch * a.seq / seconds
    flops = 3 * forward_flops_per_token(sc, a.seq) + forward_flops_per_token(tc, a.seq)
    mfu = tps * flops / (a.peak_tflops * 1e12)
    n_s = sum(x.numel() for x in student.parameters()) / 1e9
    n_t = sum(x.numel() for x in teacher.parameters()) / 1e9
    print("transformers: student %.2fB, teacher %.2fB, bf16, batch %d x seq %d: %.0f student "
          "tokens/s, MFU %.1f%%, peak memory %.1f GiB" % (
              n_s, n_t, a.batch, a.seq, tps, 100 * mfu, torch.cuda.max_memory_allocated() / 2**30))
    print(json.dumps({"impl": "transformers", "tokens_per_second": tps, "mfu": mfu}))


if __name__ == "__main__":
    main()
