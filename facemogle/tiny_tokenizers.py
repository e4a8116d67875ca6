"""Tokenizers for the tiny FLUX, built offline and deterministically from a caption corpus.

CLIP's tokenizer is a byte-level BPE (any string encodes) handed to `CLIPTokenizer`; T5's is a Unigram
model handed to `T5Tokenizer`; BERT's (the small ImageReward's) a WordPiece vocabulary handed to
`BertTokenizer`; all save and reload as the real ones do (transformers' fast tokenizers). The vocabularies are built here rather than with the `tokenizers` trainers, whose tie
breaking follows Rust hash-map order and so differs from process to process: the frequent corpus words
become whole tokens (most frequent first, ties alphabetical), everything else falls back to characters.
"""

from __future__ import annotations

import math
import string
from collections import Counter
from collections.abc import Iterable

from tokenizers import pre_tokenizers
from transformers import BertTokenizer, CLIPTokenizer, T5Tokenizer

CLIP_SPECIAL = {"bos": "<|startoftext|>", "eos": "<|endoftext|>"}
T5_SPECIAL = {"pad": "<pad>", "eos": "</s>", "unk": "<unk>"}
BERT_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
END = "</w>"  # CLIP's end-of-word suffix

# The words of face descriptions in the MM-CelebA-HQ style: the default training corpus.
FACE_WORDS = """
the a an and with has have is are wears wearing she he her his this person woman man young old
attractive smiling smile mouth slightly open closed lips lipstick heavy makeup no beard mustache
goatee sideburns stubble hair bangs bald receding hairline straight wavy curly black blond blonde
brown gray grey red auburn dark light short long pulled back tied ponytail eyes eyebrows arched
bushy narrow bags under big nose pointy round face oval chubby double chin high cheekbones rosy
cheeks pale skin fair tan olive eyeglasses glasses sunglasses hat cap earrings necklace necktie
shirt collar cloth neck ears visible looks looking faces camera left right front slightly turned
also seems appears expression happy neutral serious 5 o'clock shadow wears her hair in a bun of
""".split()


def _corpus(extra: Iterable[str] | None) -> list[str]:
    return [" ".join(FACE_WORDS), *(extra or [])]


def _ranked(words: Iterable[str]) -> list[str]:
    counts = Counter(words)
    return sorted(counts, key=lambda w: (-counts[w], w))


def build_clip_tokenizer(vocab_size: int = 2048, corpus: Iterable[str] | None = None, max_length: int = 77):
    """Byte-level BPE: 256 bytes (alone and word-final) plus merges spelling out the frequent words."""
    bos, eos = CLIP_SPECIAL["bos"], CLIP_SPECIAL["eos"]
    probe = CLIPTokenizer(vocab={bos: 0, eos: 1}, merges=[])  # CLIP's own normaliser and pre-tokeniser
    norm, pre = probe.backend_tokenizer.normalizer, probe.backend_tokenizer.pre_tokenizer
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {bos: 0, eos: 1}
    for token in alphabet + [c + END for c in alphabet]:
        vocab[token] = len(vocab)
    merges: list[tuple[str, str]] = []
    words = [piece for line in _corpus(corpus) for piece, _ in pre.pre_tokenize_str(norm.normalize_str(line))]
    for word in _ranked(words):
        symbols = list(word[:-1]) + [word[-1] + END]
        new = [symbols[0] + "".join(symbols[1 : k + 1]) for k in range(1, len(symbols))]
        if len(vocab) + sum(t not in vocab for t in new) > vocab_size:
            break
        left = symbols[0]
        for k, token in enumerate(new, start=1):
            if token not in vocab:
                vocab[token] = len(vocab)
                merges.append((left, symbols[k]))
            left = token
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def build_t5_tokenizer(vocab_size: int = 2048, corpus: Iterable[str] | None = None, max_length: int = 512):
    """Unigram: whole words scored by log frequency, printable characters as a low-scored fallback."""
    pre = pre_tokenizers.Metaspace()
    words = [piece for line in _corpus(corpus) for piece, _ in pre.pre_tokenize_str(line)]
    counts = Counter(words)
    total = sum(counts.values())
    vocab = [(T5_SPECIAL["pad"], 0.0), (T5_SPECIAL["eos"], 0.0), (T5_SPECIAL["unk"], 0.0)]
    chars = ["\u2581", *string.printable.strip()]
    vocab += [(c, -20.0) for c in chars]
    known = {c for c, _ in vocab}
    for word in _ranked(words):
        if len(vocab) >= vocab_size:
            break
        if word not in known:
            vocab.append((word, math.log(counts[word] / total)))
            known.add(word)
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_length)


def build_bert_tokenizer(vocab_size: int = 1024, corpus: Iterable[str] | None = None) -> BertTokenizer:
    """WordPiece, lower case: BERT's special tokens, printable characters alone and as word pieces (##c),
    then the frequent corpus words whole."""
    pre = pre_tokenizers.BertPreTokenizer()
    chars = sorted(set(string.printable.strip().lower()))
    vocab = {token: i for i, token in enumerate([*BERT_SPECIAL, *chars, *(f"##{c}" for c in chars)])}
    words = [piece for line in _corpus(corpus) for piece, _ in pre.pre_tokenize_str(line.lower())]
    for word in _ranked(words):
        if len(vocab) >= vocab_size:
            break
        vocab.setdefault(word, len(vocab))
    return BertTokenizer(vocab=vocab, do_lower_case=True)
