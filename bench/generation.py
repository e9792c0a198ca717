"""A ~1B Llama generating on every path, with two hand loops (BENCHMARKS.md, "How fast does a decoder generate...").

    python -m bench.generation --out DIR [--batch 1 --prompt 128 --new 128]

The model (hidden 2048, 16 layers, 32 heads, 8 KV heads, FFN 8192, vocabulary 32000) is built on the
GPU with seeded random weights. Torch paths run bf16 (and the CUDA graph fp16 too, the dtype ORT runs),
ORT paths fp16 (its model builder's CUDA precision). The table prints TTFT, TPOT median, tokens/s and
the fraction of the measured copy bandwidth each decode step reaches.

Fidelity, in the same process: the harness's torch CUDA graph against a bare loop that captures the
same static-cache decode step and replays it; ORT GenAI against a bare ``Generator`` loop timed the
same way (host clock around ``generate_next_token``). Both compare the mean decode step. ORT GenAI
without its graph is launch-bound at batch 1, and such a loop's pace moves several percent between two
loops minutes apart in one process, so it is also compared in rounds alternating generation by
generation (``--rounds``, seeded A B B A order), the thread pinned to the GPU's timing CPU as a trial's
is: the paired ratio of harness to bare with its 95% interval (``workers.measure.paired``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from workers.generation.measure import RUNNERS, copy_bandwidth, measure, prompt, reference, timing_cpu
from workers.generation.source import Source
from workers.measure import affinity

LLAMA_1B = {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
            "intermediate_size": 8192, "vocab_size": 32000, "max_position_embeddings": 4096}
RUNS = [("torch-eager", "bf16"), ("torch-cudagraph", "bf16"), ("torch-compile", "bf16"), ("torch-cudagraph", "fp16"),
        ("ort", "fp16"), ("ort-genai", "fp16"), ("ort-genai-graph", "fp16")]


def bare_graph_loop(src: Source, dtype: str, ids: np.ndarray, new_tokens: int, reps: int = 3) -> float:
    """Mean decode step (ms) of a hand-captured static-cache graph replayed per token, argmax outside."""
    import torch
    from transformers import StaticCache

    model = src.torch_model(dtype)
    b, p = ids.shape
    tdt = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    cache = StaticCache(config=model.config, max_cache_len=p + new_tokens)
    cache.early_initialization(b, src.shape.kv_heads, src.shape.head_dim, tdt, torch.device("cuda"))
    kw = "cache" if "cache" in __import__("inspect").signature(model.forward).parameters else "past_key_values"
    tok = torch.zeros((b, 1), dtype=torch.long, device="cuda")
    pos = torch.zeros((1,), dtype=torch.long, device="cuda")

    def step():
        return model(input_ids=tok, position_ids=pos[None].expand(b, 1), use_cache=True, **{kw: cache}).logits
    with torch.inference_mode():
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            pos.fill_(p)
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out = step()
        times = []
        for _ in range(reps):
            cache.reset()
            x = torch.as_tensor(ids, device="cuda")
            model(input_ids=x, use_cache=True, **{kw: cache})
            pos.fill_(p)
            torch.cuda.synchronize()
            a, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(new_tokens - 1):
                g.replay()
                tok.copy_(out[:, -1].argmax(-1, keepdim=True))
                pos.add_(1)
            e.record()
            e.synchronize()
            times.append(a.elapsed_time(e) / (new_tokens - 1))
    g.reset()
    cache.reset()
    return float(np.median(times))


def _bare_model(folder: Path, graph: bool, device: str):
    """ORT GenAI's own model over the builder's folder, on ``device``'s provider (its graph where asked)."""
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    config.clear_providers()
    if device.startswith("cuda"):
        config.append_provider("cuda")
        if graph:
            config.set_provider_option("cuda", "enable_cuda_graph", "1")
    return og.Model(config)


def _bare_generation(model, ids: np.ndarray, new_tokens: int) -> float:
    """One generation of a bare ``Generator`` loop: its mean decode step (ms), host-timed around
    ``generate_next_token`` as the harness times it."""
    import onnxruntime_genai as og

    n = ids.shape[1] + new_tokens
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=n, min_length=n, do_sample=False, batch_size=ids.shape[0])
    gen = og.Generator(model, params)
    gen.append_tokens(ids.astype(np.int32))
    gen.generate_next_token()
    t0 = time.perf_counter()
    for _ in range(new_tokens - 1):
        gen.generate_next_token()
    return (time.perf_counter() - t0) * 1e3 / (new_tokens - 1)


def bare_generator_loop(folder: Path, graph: bool, ids: np.ndarray, new_tokens: int, reps: int = 3,
                        device: str = "cuda") -> float:
    """Mean decode step (ms) of ORT GenAI's own Generator loop, host-timed around generate_next_token."""
    model = _bare_model(folder, graph, device)
    times = [_bare_generation(model, ids, new_tokens) for _ in range(reps + 1)]
    return float(np.median(times[1:]))


def generator_rounds(src: Source, graph: bool, dtype: str, ids: np.ndarray, new_tokens: int, device: str,
                     rounds: int = 10, seed: int = 0) -> tuple[float, float, float] | None:
    """The harness's ORT GenAI path against a bare Generator loop, in ``rounds`` rounds alternating in
    this process (A B B A ..., seeded): (ratio, low, high) of harness over bare mean decode step, 95%.
    A launch-bound loop's pace moves several percent between two loops minutes apart in one process;
    alternating generation by generation lets both see the same drift."""
    from workers.measure import paired

    runner = RUNNERS["ort-genai-graph" if graph else "ort-genai"]()
    b, p = ids.shape
    runner.setup(src, dtype, device, b, p, new_tokens)
    try:
        model = _bare_model(src.onnx_model(dtype, "cuda" if device.startswith("cuda") else "cpu"), graph, device)
        arms = (lambda: float(np.mean(runner.generate(ids).step_ms)), lambda: _bare_generation(model, ids, new_tokens))
        per: tuple[list[float], list[float]] = ([], [])
        with affinity.pinned(timing_cpu(device)):  # both loops on the thread and CPU a trial times on
            for arm in arms:  # a warm-up generation each
                arm()
            for order in paired.round_orders(2, rounds, seed):
                for i in order:
                    per[i].append(arms[i]())
    finally:
        runner.teardown()
    return paired.paired_ratio(per[1], per[0], 0.95)


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/generation")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--workdir", default="/tmp/gen-bench",
                    help="the model's save_pretrained folder; ORT GenAI's builds go to the node's cache "
                         "(INFER_ORCH_CACHE, else ~/.cache/infer-orch)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model: checks the script, measures nothing")
    ap.add_argument("--paths", default="", help="comma-separated backends to run (default: all)")
    ap.add_argument("--rounds", type=int, default=10, help="rounds of the interleaved ORT GenAI fidelity check")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    shape = {**LLAMA_1B, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 256} if args.tiny else LLAMA_1B
    src = Source("llama", shape, seed=0, device=args.device, workdir=args.workdir)
    b, p, n = args.batch, args.prompt, args.new
    ids = prompt(src.shape.vocab, b, p, 0)
    ref = reference(src, b, p, n, ids)
    bw = copy_bandwidth(args.device)
    bw_text = f"{bw / 1e12:.2f} TB/s" if bw else "-"
    print(f"built, reference in {time.time() - t0:.0f} s; copy bandwidth {bw_text}", flush=True)
    recs = []
    wanted = set(filter(None, args.paths.split(",")))
    for path, dtype in [r for r in RUNS if not wanted or r[0] in wanted]:
        t = time.time()
        rec = measure(path, src, dtype, b, p, n, repeats=3, warmup=1, ref=ref)
        rec["wall_s"] = time.time() - t
        rec["tpot_mean_ms"] = float(np.mean(rec["decode_samples"])) if rec.get("decode_samples") else None
        rec.pop("tokens", None)
        recs.append(rec)
        print(f"{path} {dtype}: {rec['status']} {rec.get('error') or ''} ({rec['wall_s']:.0f} s)", flush=True)
    fid = {}
    hand = (("torch-cudagraph bf16 vs bare graph loop", lambda: bare_graph_loop(src, "bf16", ids, n)),
            ("ort-genai fp16 vs bare Generator loop",
             lambda: bare_generator_loop(src.onnx_model("fp16", "cuda"), False, ids, n)),
            ("ort-genai-graph fp16 vs bare Generator loop",
             lambda: bare_generator_loop(src.onnx_model("fp16", "cuda"), True, ids, n)))
    for name, fn in hand:
        if wanted and name.split()[0] not in wanted:
            continue
        try:
            with affinity.pinned(timing_cpu(args.device)):  # as the harness's timed generations are
                fid[name] = fn()
        except Exception as exc:  # noqa: BLE001 - a bench prints what failed and goes on
            fid[name] = f"failed: {exc}"
    paired_fid = {}
    for graph in (False, True):
        name = f"ort-genai{'-graph' if graph else ''} fp16 vs bare Generator loop, {args.rounds} rounds interleaved"
        if (wanted and name.split()[0] not in wanted) or (graph and not args.device.startswith("cuda")):
            continue
        try:
            paired_fid[name] = generator_rounds(src, graph, "fp16" if args.device.startswith("cuda") else "fp32", ids,
                                                n, args.device, args.rounds)
        except Exception as exc:  # noqa: BLE001 - a bench prints what failed and goes on
            paired_fid[name] = f"failed: {exc}"
    (out / "generation.json").write_text(json.dumps({"records": recs, "fidelity": fid, "paired": paired_fid},
                                                    default=str))
    dev_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"\n{dev_name}  {time.strftime('%Y-%m-%d')}  llama {'tiny' if args.tiny else '~1B'}, batch {b}, prompt {p}, "
          f"{n} new tokens; copy bandwidth {bw_text}; "
          f"decode step reads {max(r.get('decode_bytes', 0) for r in recs) / 1e9:.2f} GB (2-byte dtypes)")
    print(f"{'backend':18} {'dtype':5} {'TTFT ms':>8} {'TPOT med':>9} {'TPOT p99':>9} {'tok/s':>8} {'roofline':>8} "
          f"{'agree':>6} status")
    for r in recs:
        def f(k, fmt, r=r):
            return format(r[k], fmt) if r.get(k) is not None else "-"
        print(f"{r['backend']:18} {r['dtype']:5} {f('ttft_ms', '8.2f')} {f('tpot_median_ms', '9.3f')} "
              f"{f('tpot_p99_ms', '9.3f')} {f('tokens_per_s', '8.0f')} {f('roofline_frac', '8.2f')} "
              f"{f('token_agreement', '6.2f')} {r['status']}{(': ' + r['error'][:80]) if r.get('error') else ''}")
    by = {(r["backend"], r["dtype"]): r for r in recs}
    pairs = {"torch-cudagraph bf16 vs bare graph loop": ("torch-cudagraph", "bf16"),
             "ort-genai fp16 vs bare Generator loop": ("ort-genai", "fp16"),
             "ort-genai-graph fp16 vs bare Generator loop": ("ort-genai-graph", "fp16")}
    print("fidelity (mean decode step, harness vs hand loop, same process):")
    for name, bare in fid.items():
        mine = by.get(pairs[name], {}).get("tpot_mean_ms")
        if isinstance(bare, float) and mine:
            print(f"  {name}: {mine:.3f} ms vs {bare:.3f} ms ({(mine / bare - 1) * 100:+.1f}%)")
        else:
            print(f"  {name}: {bare}")
    for name, r in paired_fid.items():
        text = r if isinstance(r, str) else (f"harness/bare {r[0]:.4f} (95% {r[1]:.4f}-{r[2]:.4f})" if r
                                             else "too few rounds")
        print(f"  {name}: {text}")


if __name__ == "__main__":
    main()
