"""Generation: a request is a prompt (prefill) then greedy decoding with a KV cache, timed token by token.

- ``models``: causal-LM architectures with their LM head, random seeded weights or a local folder,
  and the checks of a request (positions, new tokens, a model that does not generate);
- ``source``: the one fp32 model all paths of a generation run, and its ONNX build;
- ``base``: the runner interface, the clocks, what a generation records;
- ``torch_paths`` / ``ort_paths``: the runners (eager, static cache with CUDA graph or torch.compile,
  ORT with IO binding, ORT GenAI with and without its CUDA graph);
- ``measure``: warm-up, timed generations, parity against fp32 eager, the stale check, the roofline.

Heavy libraries are imported inside functions; importing ``workers.generation.models`` is light.
"""
