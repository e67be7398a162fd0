"""The report transformer: the decoder of Task 1, report generation (Methods 4.2, Eq. 1).

"The network architecture of the report transformer follows the architecture of the decoder in
[Vaswani et al.]": masked (causal) self-attention over the report so far, cross-attention to the
visual memory of the study, a feed-forward layer; learned position embeddings; the output layer
shares its weights with the token embedding (tied). We use PyTorch's ``nn.TransformerDecoder``
(pre-LayerNorm, which trains more stably than the original post-norm; its attention runs through
``scaled_dot_product_attention``).

Training is teacher-forced (Eq. 1): the input is c_1..c_{T-1}, the targets c_2..c_T.
Generation works from images alone: greedy decoding and beam search, every output starting with
the begin token and ending with the end token within ``max_len`` tokens.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig


class ReportTransformer(nn.Module):
    def __init__(self, vocab_size: int, memory_dim: int, width: int = 512, depth: int = 3, heads: int = 8,
                 ffn: int = 2048, max_len: int = 128, dropout: float = 0.1,
                 pad_id: int = 0, bos_id: int = 1, eos_id: int = 2):
        super().__init__()
        self.vocab_size, self.max_len = vocab_size, max_len
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.tok_embed = nn.Embedding(vocab_size, width, padding_idx=pad_id)
        self.pos_embed = nn.Parameter(torch.zeros(1, max_len, width))
        nn.init.normal_(self.tok_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)
        self.memory_proj = nn.Linear(memory_dim, width)  # visual tokens -> decoder width
        layer = nn.TransformerDecoderLayer(width, heads, ffn, dropout=dropout, activation="relu",
                                           batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, depth, norm=nn.LayerNorm(width))
        self.drop = nn.Dropout(dropout)


    @classmethod
    def from_config(cls, m: ModelConfig) -> "ReportTransformer":
        """The report decoder of a model config; its memory is the radiograph transformer's width."""
        return cls(m.vocab_size, m.width, m.decoder_width, m.decoder_depth, m.decoder_heads, m.decoder_ffn,
                   m.max_report_len, m.decoder_dropout, m.pad_id, m.bos_id, m.eos_id)
    def forward(self, tokens: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        """tokens (B, T) ids, memory (B, M, memory_dim), memory_mask (B, M) True = keep -> logits (B, T, vocab)."""
        B, T = tokens.shape
        if T > self.max_len:
            raise ValueError(f"report of {T} tokens exceeds the report transformer's max_len={self.max_len}")
        x = self.drop(self.tok_embed(tokens) + self.pos_embed[:, :T])  # (B, T, W)
        mem = self.memory_proj(memory)  # (B, M, W)
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool, device=tokens.device), diagonal=1)  # True = masked
        h = self.decoder(x, mem, tgt_mask=causal, tgt_key_padding_mask=tokens.eq(self.pad_id),
                         memory_key_padding_mask=None if memory_mask is None else ~memory_mask,
                         tgt_is_causal=True)  # (B, T, W)
        return h @ self.tok_embed.weight.t()  # tied output embedding: (B, T, vocab)

    @torch.no_grad()
    def generate(self, memory: torch.Tensor, memory_mask: torch.Tensor | None = None, max_len: int | None = None,
                 num_beams: int = 1, length_penalty: float = 1.0) -> torch.Tensor:
        """Decode reports from visual memory alone.

        Returns (B, L) token ids, L <= max_len: each row is BOS, tokens, EOS, then padding.
        ``num_beams=1`` is greedy decoding.
        """
        max_len = min(max_len or self.max_len, self.max_len)
        if max_len < 2:
            raise ValueError("max_len must be >= 2 (begin and end tokens)")
        if num_beams < 1:
            raise ValueError("num_beams must be >= 1")
        B, K, dev = memory.shape[0], num_beams, memory.device
        mem = memory.repeat_interleave(K, 0)  # (B*K, M, D)
        mmask = None if memory_mask is None else memory_mask.repeat_interleave(K, 0)
        seqs = torch.full((B * K, 1), self.bos_id, dtype=torch.long, device=dev)
        scores = torch.zeros(B, K, device=dev)
        scores[:, 1:] = float("-inf")  # all beams start identical: keep only the first alive
        finished = torch.zeros(B * K, dtype=torch.bool, device=dev)
        lengths = torch.ones(B * K, device=dev)  # tokens so far, BOS included
        for t in range(1, max_len):
            logits = self.forward(seqs, mem, mmask)[:, -1].float()  # (B*K, V)
            logp = logits.log_softmax(-1)
            logp[:, [self.pad_id, self.bos_id]] = float("-inf")  # never emitted inside a report
            if t == max_len - 1:  # the last position must close the report
                eos = logp[:, self.eos_id].clone()
                logp.fill_(float("-inf"))
                logp[:, self.eos_id] = eos
            # finished beams only extend with padding, at no cost
            logp[finished] = float("-inf")
            logp[finished, self.pad_id] = 0.0
            V = logp.shape[-1]
            cand = (scores.view(B * K, 1) + logp).view(B, K * V)
            scores, idx = cand.topk(K, dim=-1)  # (B, K)
            beam = idx // V + torch.arange(B, device=dev).unsqueeze(1) * K  # (B, K) rows into B*K
            tok = (idx % V).view(-1, 1)
            beam = beam.view(-1)
            seqs = torch.cat([seqs[beam], tok], dim=1)
            was_finished = finished[beam]
            lengths = lengths[beam] + (~was_finished).float()
            finished = was_finished | tok.view(-1).eq(self.eos_id)
            if bool(finished.all()):
                break
        norm = scores.view(-1) / lengths.pow(length_penalty)  # length-normalised log-probability
        best = norm.view(B, K).argmax(-1) + torch.arange(B, device=dev) * K
        out = seqs[best]  # (B, L)
        keep = int(out.ne(self.pad_id).sum(1).max())  # trim trailing padding columns
        return out[:, :keep]
