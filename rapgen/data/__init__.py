"""Lyrics and training data: the lyrics format, datasets and token caches, and collecting lyrics."""
