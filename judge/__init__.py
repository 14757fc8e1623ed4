"""Judges: engines behind one interface (rules, transformers, OpenAI-compatible, SGLang) and the reward
pipelines built on them (GTAlign welfare, pairwise preference, red-team safety, GPO). See README.md."""
