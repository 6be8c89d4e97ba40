"""Inputs: which files make a corpus, reading and encoding it, the vocabulary, the cache, splits, batches."""
