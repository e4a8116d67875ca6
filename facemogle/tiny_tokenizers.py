"""Tokenizers for the tiny FLUX, trained offline with the `tokenizers` library.

CLIP's tokenizer is a byte-level BPE (any string encodes) handed to `CLIPTokenizer`; T5's is a
Unigram model with a Metaspace pre-tokenizer handed to `T5Tokenizer`,
so both save and reload as the real ones do (transformers' fast tokenizers).
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import CLIPTokenizer, T5Tokenizer

CLIP_SPECIAL = {"bos": "<|startoftext|>", "eos": "<|endoftext|>"}
T5_SPECIAL = {"pad": "<pad>", "eos": "</s>", "unk": "<unk>"}

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
    # Every printable character also stands alone once, so it has an end-of-word token of its own.
    lines = [" ".join(FACE_WORDS), " ".join(string.printable.split()), " ".join(string.printable.strip())]
    lines += [f"{w}." for w in FACE_WORDS]
    return lines + list(extra or [])


def build_clip_tokenizer(vocab_size: int = 512, corpus: Iterable[str] | None = None, max_length: int = 77):
    """A BPE trained with CLIP's own normalisation and pre-tokenisation, handed to `CLIPTokenizer`."""
    bos, eos = CLIP_SPECIAL["bos"], CLIP_SPECIAL["eos"]
    probe = CLIPTokenizer(vocab={bos: 0, eos: 1}, merges=[])  # borrow CLIP's normaliser and pre-tokeniser
    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>", continuing_subword_prefix="", unk_token=eos))
    tok.normalizer = probe.backend_tokenizer.normalizer
    tok.pre_tokenizer = probe.backend_tokenizer.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[bos, eos],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
    )
    tok.train_from_iterator(_corpus(corpus), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return CLIPTokenizer(vocab=model["vocab"], merges=merges, model_max_length=max_length)


def build_t5_tokenizer(vocab_size: int = 512, corpus: Iterable[str] | None = None, max_length: int = 512):
    """A Unigram model (T5's kind) trained on the corpus, handed to `T5Tokenizer`."""
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=[T5_SPECIAL["pad"], T5_SPECIAL["eos"], T5_SPECIAL["unk"]],
        unk_token=T5_SPECIAL["unk"],
        initial_alphabet=list(string.printable.strip()),
    )
    tok.train_from_iterator(_corpus(corpus), trainer=trainer)
    vocab = [tuple(piece) for piece in json.loads(tok.to_str())["model"]["vocab"]]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_length)
