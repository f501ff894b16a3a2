"""Text encoder: any local Hugging Face checkpoint (AutoModel + AutoTokenizer), pooled to one vector a text.

Speed comes from length bucketing: texts are tokenised once, sorted by token length and batched, so a
batch pads to its own longest text instead of the corpus's (bench/bench_embed.py measures the gain and
checks the vectors match a plain padded loop). Track-agnostic: it takes a list of texts.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from recstack.embed.cache import EmbeddingCache, content_key, namespace
from recstack.embed.hf import (
    autocast_dtype,
    default_text_model,
    inference,
    local_checkpoint,
    offline,
    resolve_device,
)

log = logging.getLogger(__name__)

POOLINGS = ("mean", "cls", "last")
CHARS_PER_TOKEN_CAP = 32  # texts are cut at max_length * 32 characters before tokenising (no token is longer)


@dataclass
class TextStats:
    texts: int = 0
    empty: int = 0  # null, empty or whitespace-only: no vector (mask False)
    non_utf8: int = 0  # undecodable bytes, replaced by U+FFFD
    truncated: int = 0  # longer than max_length tokens
    cached: int = 0
    encoded: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def clean_texts(texts: list[Any], max_chars: int, stats: TextStats) -> tuple[list[str], np.ndarray]:
    """Decoded, whitespace-normalised texts (cut at max_chars) and a mask of the non-empty ones."""
    out, mask = [], np.zeros(len(texts), bool)
    for i, t in enumerate(texts):
        if t is None or (isinstance(t, float) and math.isnan(t)):
            t = ""
        if isinstance(t, bytes | bytearray):
            try:
                t = bytes(t).decode("utf-8")
            except UnicodeDecodeError:
                t, stats.non_utf8 = bytes(t).decode("utf-8", errors="replace"), stats.non_utf8 + 1
        t = str(t)
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates (e.g. bytes read with surrogateescape)
            t, stats.non_utf8 = t.encode("utf-8", errors="replace").decode("utf-8"), stats.non_utf8 + 1
        t = " ".join(t.replace("\x00", " ").split())
        t = t[:max_chars]  # far beyond max_length tokens: still counted as truncated by tokenize()
        out.append(t)
        mask[i] = bool(t)
    stats.texts, stats.empty = len(texts), int((~mask).sum())
    return out, mask


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """hidden (B, T, H), mask (B, T) with real tokens first (right padding) -> (B, H) float32."""
    hidden = hidden.float()
    if how == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    if how == "cls":
        return hidden[:, 0]
    if how == "last":  # decoder models: the last real token has seen the whole text
        last = mask.long().sum(1) - 1  # (B,)
        return hidden[torch.arange(len(hidden), device=hidden.device), last]
    raise ValueError(f"pooling {how!r}; expected one of {', '.join(POOLINGS)}")


class TextEncoder:
    def __init__(
        self,
        model: str = "",
        pooling: str = "mean",
        max_length: int = 64,
        batch_size: int = 128,
        device: str = "auto",
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
        offline()
        self.path: Path = local_checkpoint(model or default_text_model(), "text encoder")
        self.pooling, self.max_length, self.batch_size = pooling, max_length, batch_size
        self.device = resolve_device(device)
        # imported here, not at module import: transformers takes seconds to import
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.path, local_files_only=True).to(self.device).eval()
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.pad_id = int(pad) if pad is not None else 0  # decoder models often have no pad token
        self.dim = int(self.model.config.hidden_size)

    @property
    def name(self) -> str:
        return self.path.name if self.path.name != "model" else self.path.parent.name

    def settings(self) -> dict[str, Any]:
        """Everything that changes a vector (the cache namespace); batch size does not."""
        dtype = autocast_dtype(self.device)
        return {"kind": "text", "pooling": self.pooling, "max_length": self.max_length, "dtype": str(dtype)}

    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], np.ndarray]:
        """Token ids (truncated to max_length, special tokens included) and a mask of truncated texts."""
        if not texts:  # the fast tokenizer fails with an IndexError on an empty batch (transformers 5)
            return [], np.zeros(0, bool)
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length, verbose=False)["input_ids"]
        full = [i for i, x in enumerate(ids) if len(x) >= self.max_length]  # only these can have been cut
        truncated = np.zeros(len(texts), bool)
        if full:
            raw = self.tokenizer([texts[i] for i in full], add_special_tokens=False, verbose=False)
            extra = self.tokenizer.num_special_tokens_to_add()
            for i, x in zip(full, raw["input_ids"], strict=True):
                truncated[i] = len(x) + extra > self.max_length
        return ids, truncated

    def encode_ids(self, ids: list[list[int]], progress: bool = True) -> np.ndarray:
        """(N, H) float32 in the order of `ids`; batches of similar length (longest first: OOM shows early)."""
        out = np.zeros((len(ids), self.dim), np.float32)
        lengths = np.fromiter((len(x) for x in ids), np.int64, len(ids))
        order = np.argsort(-lengths, kind="stable")
        starts = range(0, len(ids), self.batch_size)
        pending: list[tuple[np.ndarray, torch.Tensor]] = []  # pooled batches still on the device

        def flush() -> None:  # one host copy per group of batches, not a sync per batch
            if pending:
                out[np.concatenate([r for r, _ in pending])] = (
                    torch.cat([v for _, v in pending]).cpu().numpy()
                )
                pending.clear()

        for s in tqdm(
            starts, desc=f"text {self.name}", unit="batch", disable=not progress or len(starts) < 2
        ):
            rows = order[s : s + self.batch_size]
            b, m = self.padded([ids[i] for i in rows])
            with inference(self.device):
                hidden = self.model(input_ids=b, attention_mask=m).last_hidden_state  # (B, T, H)
                pending.append((rows, pool(hidden, m, self.pooling).float()))
            if len(pending) >= 32:
                flush()
        flush()
        return out

    def padded(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) token ids right-padded to the longest, and the (B, T) attention mask, on the device."""
        lens = np.fromiter((len(x) for x in ids), np.int64, len(ids))
        mask = np.arange(lens.max(initial=1)) < lens[:, None]  # (B, T): each row's tokens are a prefix
        batch = np.full(mask.shape, self.pad_id, np.int64)
        batch[mask] = np.concatenate(ids)  # row-major fill = row by row
        b = torch.from_numpy(batch).to(self.device, non_blocking=True)
        return b, torch.from_numpy(mask.astype(np.int64)).to(self.device, non_blocking=True)

    def pooled(self, ids: list[list[int]]) -> torch.Tensor:
        """(B, H) float32 pooled vectors with autograd on (for tuning the model; encode_ids for inference)."""
        b, m = self.padded(ids)
        with torch.autocast(
            self.device.type,
            dtype=autocast_dtype(self.device) or torch.bfloat16,
            enabled=autocast_dtype(self.device) is not None,
        ):
            hidden = self.model(input_ids=b, attention_mask=m).last_hidden_state  # (B, T, H)
        return pool(hidden, m, self.pooling)

    def encode(self, texts: list[str], progress: bool = True) -> np.ndarray:
        ids, _ = self.tokenize(texts)
        return self.encode_ids(ids, progress)


def encode_texts(
    encoder: TextEncoder, texts: list[Any], cache_root: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray, TextStats]:
    """(N, H) float32 vectors, (N,) mask of texts that have one, and counts of what was odd.

    Null / empty texts get a zero vector and mask False; non-UTF-8 bytes are replaced and counted; texts
    over max_length tokens are truncated and counted. Only texts missing from the cache are encoded.
    """
    stats = TextStats()
    clean, mask = clean_texts(texts, encoder.max_length * CHARS_PER_TOKEN_CAP, stats)
    rows = np.flatnonzero(mask)
    ids, truncated = encoder.tokenize([clean[i] for i in rows])  # cheap next to encoding: count them all
    stats.truncated = int(truncated.sum())
    cache = EmbeddingCache(cache_root, namespace(encoder.path, encoder.settings()))
    keys = [content_key(clean[i]) for i in rows]
    hit, cached = cache.lookup(keys)
    out = np.zeros((len(texts), encoder.dim), np.float32)
    if cached is not None:
        out[rows[hit]] = cached[hit]
    first: dict[bytes, int] = {}  # identical texts are encoded once
    for j in np.flatnonzero(~hit):
        first.setdefault(keys[j], j)
    todo = np.fromiter(first.values(), np.int64, len(first))
    if len(todo):
        out[rows[todo]] = encoder.encode_ids([ids[j] for j in todo])
        cache.add([keys[j] for j in todo], out[rows[todo]])
        dup = np.array([j for j in np.flatnonzero(~hit) if first[keys[j]] != j], np.int64)
        if len(dup):
            out[rows[dup]] = out[rows[[first[keys[j]] for j in dup]]]
    stats.cached, stats.encoded = int(hit.sum()), len(todo)
    if stats.empty or stats.non_utf8 or stats.truncated:
        log.info(
            "texts: %d empty (no vector), %d with non-UTF-8 bytes (replaced), %d truncated at %d tokens",
            stats.empty,
            stats.non_utf8,
            stats.truncated,
            encoder.max_length,
        )
    return out, mask, stats
