"""Judging songs: phonetics, rhyme, originality, the analysis table, perplexity, ranking."""
