"""The LLM family: `engine` (the protocol and request types), `transformers_engine` (CPU, the `local` default),
`vllm_engine` (GPUs; runs in its own runtime_env), `server` (the Serve deployment).

Kept import-light on purpose: the vLLM test environment imports `deployments.llm.vllm_engine` without Ray.
"""
