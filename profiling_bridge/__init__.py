"""PyTorch + transformers profiling bridge: measure real MLLM latency per configuration into e5jax tables.

Modules: ``archs`` (config dicts, random-weight builds), ``knobs`` (applying vision_tokens / top_k /
active_blocks and restoring), ``runner`` (vision, prefill, decode of one request), ``timing`` (CUDA events
or perf_counter_ns), ``measure`` (stage grids, end-to-end runs), ``latency_model`` (fit + validation),
``sweep`` (latency of every (request, config)), ``request_shapes``, ``vqa`` (prompt and answer metrics),
``quality`` (VQA harness) and ``batch_eval`` (its batched form), ``tiny_vqa`` (easy-vqa and the tiny model
trained on it), ``knob_effects``, ``measured_summary``, ``cli`` (``e5jax-bridge``). See docs/bridge.md.
"""
