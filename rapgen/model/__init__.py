"""The network and its files: GPT-2, its shapes, tokenizer, checkpoints, model folders, downloads, LoRA."""
