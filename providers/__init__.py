"""Model providers: the Provider protocol, adapters, pricing and the local fake.

base.py       Provider protocol, CompletionRequest, Completion, ModelRef
openai.py     OpenAIProvider over the official openai SDK (OpenAI-compatible servers too)
anthropic.py  AnthropicProvider over the official anthropic SDK
failures.py   HTTP failures -> ProviderError subclasses, Retry-After, redaction
retry.py      retry policy (backoff with full jitter, Retry-After, bounded attempts)
pricing.py    prices and the cost of a call
fake.py       in-process deterministic fake
rules.py      deterministic answers to tierflow's expert prompts
server/       local OpenAI/Anthropic-compatible HTTP server (replay, rules, faults)
"""
