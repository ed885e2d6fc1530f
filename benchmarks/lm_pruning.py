"""Prune a small GPT-2 trained on Python's own source: validation perplexity of every method (issue 14).

**Model and data.** A ``transformers`` GPT-2 built from a config (byte-level: 256 tokens, 128
positions, ``--embed`` 64, ``--blocks`` 3, 4 heads, no dropout), trained with AdamW for
``--train-seconds`` on the Python standard library's own ``.py`` files (every machine has them:
``sysconfig.get_paths()["stdlib"]``, top-level files, sorted). The split is by file: a file whose
CRC32 of its name is ``0 mod 10`` is held out. The trained model is cached under ``out/`` (pass
``--retrain`` to train again).

**Calibration and evaluation.** ``--calibration`` sequences of 128 bytes from random places of the
training files; validation perplexity ``exp(mean cross-entropy)`` on non-overlapping 128-byte windows
of the held-out files (``--eval-windows`` of them).

**Methods**, each at 50% sparsity (exactly half of every row), at 2:4 and at 75%, every one through
:func:`convexnet.nn.trim` on the same model and calibration, block by block (the baselines are
``support`` callables from ``benchmarks/lm_baselines.py``, written from their papers):

* magnitude, Wanda, SparseGPT (its own weight update): their weights as the method gives them;
* each of those masks followed by convexnet's exact refit (:func:`convexnet.nn.refit` on the dense
  model with the method's masks): ``min ||X (W - W0)||^2`` on the mask, certified;
* convexnet: the support chosen by the reweighted l1 path, then the exact refit.

Time is the wall time of the pruning call; memory the peak resident set size above the one before the
call (sampled every 5 ms). "layer error" is ``sum_l ||X_l (W_l - W0_l)||^2`` over the pruned layers
(each on its calibration input in the model pruned so far): what every mask + refit minimizes layer
by layer. Every layer of every result carries its duality-gap certificate as the refit of its mask;
the ``cert`` column counts those that verify (the baselines' own weights are not the optimal refit).

Run::

    python benchmarks/lm_pruning.py                         # trains (about 5 minutes), then prunes
    python benchmarks/lm_pruning.py --train-seconds 60 --calibration 32     # a quick look
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import sys
import sysconfig
import threading
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import convexnet.nn as cnn  # noqa: E402
from lm_baselines import magnitude, sparsegpt, wanda  # noqa: E402

CONTEXT = 128


# ----------------------------------------------------------------------------------- the data
def corpus() -> tuple[bytes, bytes]:
    """The standard library's top-level ``.py`` files: (training bytes, held-out bytes)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    train, held_out = [], []
    for path in sorted(root.glob("*.py")):
        text = path.read_bytes()
        (held_out if zlib.crc32(path.name.encode()) % 10 == 0 else train).append(text)
    return b"\n".join(train), b"\n".join(held_out)


def windows(data: torch.Tensor, count: int, generator) -> torch.Tensor:
    """``count`` random windows of ``CONTEXT + 1`` tokens."""
    starts = torch.randint(0, data.numel() - CONTEXT - 1, (count,), generator=generator)
    return torch.stack([data[s:s + CONTEXT + 1] for s in starts.tolist()])


def build_model(embed: int, blocks: int):
    import transformers

    config = transformers.GPT2Config(vocab_size=256, n_positions=CONTEXT, n_embd=embed,
                                     n_layer=blocks, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0,
                                     attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
                                     loss_type="ForCausalLM")
    return transformers.GPT2LMHeadModel(config)


def train(model, data: torch.Tensor, seconds: float, batch: int, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    model.train()
    start, step, losses = time.perf_counter(), 0, []
    while time.perf_counter() - start < seconds:
        chunk = windows(data, batch, generator)
        fraction = (time.perf_counter() - start) / seconds
        for group in optimizer.param_groups:       # warm-up, then cosine decay over the budget
            group["lr"] = 3e-3 * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * fraction))
        loss = model(chunk[:, :-1], labels=chunk[:, :-1], use_cache=False).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        step += 1
    model.eval()
    return {"steps": step, "seconds": time.perf_counter() - start,
            "final_loss": float(np.mean(losses[-20:]))}


def perplexity(model, data: torch.Tensor, count: int) -> float:
    """``exp`` of the mean next-byte cross-entropy on ``count`` non-overlapping windows."""
    stops = range(0, min(count * CONTEXT, data.numel() - CONTEXT), CONTEXT)
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(stops), 64):
            chunk = torch.stack([data[s:s + CONTEXT] for s in list(stops)[start:start + 64]])
            logits = model(chunk, use_cache=False).logits[:, :-1]
            total += float(torch.nn.functional.cross_entropy(
                logits.reshape(-1, 256), chunk[:, 1:].reshape(-1), reduction="sum"))
            tokens += chunk[:, 1:].numel()
    return math.exp(total / tokens)


# --------------------------------------------------------------------------------- measuring
class PeakMemory:
    """Peak resident set size above the starting one, sampled in a thread."""

    def __enter__(self):
        self.process = psutil.Process(os.getpid())
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        self.megabytes = (self.peak - self.start) / 2 ** 20


def masks_of(model) -> dict:
    """``{layer: weight_mask}`` of every pruned layer."""
    return {name: module.weight_mask.clone() for name, module in model.named_modules()
            if hasattr(module, "weight_mask")}


def run_method(dense, calibration, label, prune) -> tuple:
    model = copy.deepcopy(dense)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)          # the tied lm_head is skipped
        with PeakMemory() as memory:
            start = time.perf_counter()
            report = prune(model)
            seconds = time.perf_counter() - start
    certified = sum(row.certificate == "ok" for row in report)
    return model, {"method": label, "seconds": seconds, "memory": memory.megabytes,
                   "cert": f"{certified}/{len(report)}", "sparsity": report.sparsity,
                   "error": sum(row.discrepancy ** 2 for row in report)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-seconds", type=float, default=420.0)
    parser.add_argument("--embed", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--calibration", type=int, default=128)
    parser.add_argument("--eval-windows", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--targets", default="0.5,2:4,0.75")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    train_bytes, held_bytes = corpus()
    train_data = torch.tensor(list(train_bytes), dtype=torch.long)
    held_data = torch.tensor(list(held_bytes), dtype=torch.long)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads "
          f"visible, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"corpus: standard library {sysconfig.get_paths()['stdlib']}: {len(train_bytes):,} "
          f"training bytes, {len(held_bytes):,} held-out bytes")

    cache = Path(__file__).resolve().parents[1] / "out" / (
        f"lm_pruning_gpt2_e{args.embed}_b{args.blocks}_s{args.seed}_t{int(args.train_seconds)}.pt")
    model = build_model(args.embed, args.blocks)
    if cache.exists() and not args.retrain:
        model.load_state_dict(torch.load(cache))
        model.eval()
        print(f"model: loaded {cache.name}")
    else:
        info = train(model, train_data, args.train_seconds, args.batch, args.seed)
        cache.parent.mkdir(exist_ok=True)
        torch.save(model.state_dict(), cache)
        print(f"model: trained {info['steps']} steps in {info['seconds']:.0f} s "
              f"(batch {args.batch} x {CONTEXT}), final training loss {info['final_loss']:.3f}")
    blocks_params = sum(p.numel() for n, p in model.named_parameters() if ".h." in n)
    print(f"GPT-2: {args.blocks} blocks, width {args.embed}, {blocks_params:,} parameters in the "
          f"blocks' layers and norms")
    generator = torch.Generator().manual_seed(args.seed + 1)
    calibration = windows(train_data, args.calibration, generator)[:, :CONTEXT]
    dense_ppl = perplexity(model, held_data, args.eval_windows)
    print(f"calibration: {args.calibration} x {CONTEXT} tokens; evaluation: "
          f"{args.eval_windows} x {CONTEXT} held-out tokens\n")
    rows = [{"target": "-", "method": "dense", "ppl": dense_ppl, "seconds": 0.0, "memory": 0.0,
             "cert": "-", "sparsity": 0.0, "error": 0.0}]
    baselines = {"magnitude": magnitude, "Wanda": wanda, "SparseGPT": sparsegpt}
    for text in args.targets.split(","):
        target = {"pattern": text} if ":" in text else {"sparsity": float(text)}
        label = text if ":" in text else f"{100 * float(text):.0f}%"
        for name, method in baselines.items():
            pruned, row = run_method(model, calibration, name, lambda m, f=method: cnn.trim(
                m, calibration, support=f, refit=False, **target))
            rows.append({"target": label, **row, "ppl": perplexity(pruned, held_data,
                                                                    args.eval_windows)})
            masks = masks_of(pruned)
            refit, row = run_method(model, calibration, f"{name} + refit",
                                    lambda m: cnn.refit(m, calibration, masks))
            rows.append({"target": label, **row, "ppl": perplexity(refit, held_data,
                                                                    args.eval_windows)})
        pruned, row = run_method(model, calibration, "convexnet (l1 path + refit)",
                                 lambda m: cnn.trim(m, calibration, **target))
        rows.append({"target": label, **row, "ppl": perplexity(pruned, held_data,
                                                                args.eval_windows)})
        print_rows(rows)
        print()
    print_rows(rows, final=True)


def print_rows(rows, final=False) -> None:
    print("| target | method | val. perplexity | layer error | pruned | time (s) | "
          "peak memory (MiB) | cert |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for row in rows:
        print(f"| {row['target']} | {row['method']} | {row['ppl']:.3f} | {row['error']:.4g} | "
              f"{100 * row['sparsity']:.1f}% | {row['seconds']:.1f} | {row['memory']:.0f} | "
              f"{row['cert']} |")
    if final:
        for target in sorted({row["target"] for row in rows} - {"-"}):
            mine = [row for row in rows if row["target"] == target and row["method"].startswith("convexnet")]
            others = [row for row in rows if row["target"] == target and row["method"].endswith("refit")]
            if mine and others:
                best = min(others, key=lambda row: row["ppl"])
                verdict = "below" if mine[0]["ppl"] < best["ppl"] else "NOT below"
                print(f"{target}: convexnet {mine[0]['ppl']:.3f} is {verdict} the best baseline "
                      f"mask + refit ({best['method']}, {best['ppl']:.3f})")


if __name__ == "__main__":
    main()
