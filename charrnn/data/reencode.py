"""A corpus re-encoded with another vocabulary: a fine-tuned model reads its new text, and `eval --split`
its old one, with the model's own character -> id mapping, never the text's (torch-rnn#37, #147:
retraining on a text with another character set silently reshuffled the mapping).

Characters the vocabulary does not have are refused, added (`extend=True`), or replaced
(data.errors = replace).
"""
import dataclasses

import numpy as np

from .vocab import Corpus, Vocab, shown_chars, unknown_error

# With data.errors = replace, an unknown character becomes the first of these the vocabulary has
# (U+FFFD is what undecodable bytes became in a model trained with --errors replace), else it is dropped.
REPLACEMENTS = ("\ufffd", "?", " ")


def fit_corpus(corpus: Corpus, vocab: Vocab, *, extend: bool = False, replace: bool = False,
               source: str = "the corpus", model: str = "the model") -> tuple[Corpus, list[str], str | None]:
    """The corpus re-encoded with the model's vocabulary (extended by the unknown characters when
    `extend`): (corpus, characters added, a note on what was replaced or None). Without extend or
    replace, unknown characters are a UsageError listing a few of them."""
    if corpus.vocab == vocab:
        return corpus, [], None  # nothing to re-encode (and no copy of a big corpus)
    unknown = [c for c in corpus.vocab.chars if vocab.unknown_chars(c)]
    added: list[str] = []
    note = None
    if unknown and extend:
        added, vocab = unknown, Vocab(vocab.chars + "".join(unknown))
    elif unknown and not replace:
        raise unknown_error(unknown, source, f"the vocabulary of {model}",
                            "add them to the model with --extend-vocab, or replace them with --errors replace")
    # table[corpus id] = model id; the new array has the model vocabulary's (small) dtype, not int64
    table = np.zeros(corpus.vocab.size, vocab.dtype)
    known = np.array([not vocab.unknown_chars(c) for c in corpus.vocab.chars])
    table[known] = vocab.encode("".join(c for c, k in zip(corpus.vocab.chars, known) if k))
    data = corpus.data
    if not known.all():
        sub = next((c for c in REPLACEMENTS if c in vocab.chars), None)
        count = int(np.bincount(data, minlength=known.size)[~known].sum())
        if sub is not None:
            table[~known] = vocab.chars.index(sub)
        else:
            data = data[known[data]]
        note = (f"{count:,} occurrence(s) of {len(unknown)} character(s) not in the vocabulary of {model} "
                f"({shown_chars(unknown)}) " + (f"replaced by {sub!r}" if sub is not None else "dropped"))
    data = table[data]
    return dataclasses.replace(corpus, vocab=vocab, data=data, n_chars=int(data.size)), added, note
