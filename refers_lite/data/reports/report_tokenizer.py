"""The report transformer's own vocabulary, a Hugging Face ``tokenizers`` WordPiece tokenizer.

Its vocabulary is built from the training split's report texts only, deterministically; special tokens at fixed ids that match the model config defaults:
``[PAD]=0, [BOS]=1, [EOS]=2, [UNK]=3, [ANON]=4`` (the de-identification placeholder).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

SPECIAL_TOKENS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]", "[ANON]"]
PAD, BOS, EOS, UNK, ANON = range(len(SPECIAL_TOKENS))


class ReportTokenizer:
    def __init__(self, tokenizer: Tokenizer):
        for i, tok in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(tok) != i:
                raise ValueError(f"report tokenizer: special token {tok} must have id {i}, "
                                 f"has {tokenizer.token_to_id(tok)}")
        self.tok = tokenizer

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 3000, min_frequency: int = 1) -> "ReportTokenizer":
        """Deterministic WordPiece vocabulary: specials, every character seen (as a word start and
        as a ``##`` continuation), then whole words by descending frequency (ties alphabetical).

        Frequent words stay whole; a word outside the vocabulary is spelled in pieces rather than
        lost to [UNK]. ``tokenizers``' own WordPiece trainer breaks frequency ties differently
        from run to run, which would make two identical runs disagree; counting here does not.
        """
        tok = Tokenizer(models.WordPiece(vocab={t: i for i, t in enumerate(SPECIAL_TOKENS)}, unk_token="[UNK]",
                                         max_input_chars_per_word=100))
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        counts: Counter[str] = Counter()
        n_texts = 0
        for text in texts:
            n_texts += 1
            for special in SPECIAL_TOKENS:  # special tokens are matched whole, not counted as words
                text = text.replace(special, " ")
            counts.update(w for w, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text)))
        if n_texts == 0 or not counts:
            raise ValueError("cannot train a report tokenizer on no text")
        chars = sorted({c for w in counts for c in w})
        vocab = list(SPECIAL_TOKENS) + chars + ["##" + c for c in chars]
        if len(vocab) > vocab_size:
            raise ValueError(f"vocab_size={vocab_size} is too small for the {len(vocab)} special and character "
                             f"tokens of this corpus")
        taken = set(vocab)
        words = sorted((w for w, n in counts.items() if n >= min_frequency and w not in taken),
                       key=lambda w: (-counts[w], w))
        vocab += words[: vocab_size - len(vocab)]
        tok.model = models.WordPiece(vocab={t: i for i, t in enumerate(vocab)}, unk_token="[UNK]",
                                     max_input_chars_per_word=100)
        tok.decoder = decoders.WordPiece()
        tok.add_special_tokens(SPECIAL_TOKENS)  # "[ANON]" in a cleaned report is one token, never split
        return cls(tok)

    @classmethod
    def load(cls, path: str | Path) -> "ReportTokenizer":
        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as e:
            raise ValueError(f"{path}: cannot read the report tokenizer ({e})") from e

    def save(self, path: str | Path) -> None:
        self.tok.save(str(path))

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        """BOS + tokens + EOS, cut to ``max_len`` (the EOS is kept)."""
        ids = [BOS] + self.tok.encode(text, add_special_tokens=False).ids + [EOS]
        if max_len is not None and len(ids) > max_len:
            ids = ids[: max_len - 1] + [EOS]
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text, stopping at EOS; special tokens other than [ANON] are dropped."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i in (PAD, BOS):
                continue
            out.append(i)
        return self.tok.decode(out, skip_special_tokens=False).replace("[UNK]", "").strip()
