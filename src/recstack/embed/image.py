"""Image encoder: any local Hugging Face vision or CLIP checkpoint (AutoImageProcessor + the vision tower).

Covers are read with Pillow (JPEG, PNG, anything it opens). A missing or corrupt file gives a zero vector
and mask False, and is counted; it never stops the run. Track-agnostic: it takes a list of file paths.
"""

from __future__ import annotations

import io
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from recstack.embed.cache import EmbeddingCache, content_key, namespace
from recstack.embed.hf import autocast_dtype, inference, local_checkpoint, offline, resolve_device

log = logging.getLogger(__name__)


@dataclass
class ImageStats:
    images: int = 0
    no_path: int = 0  # items without a cover
    missing: int = 0  # a path that is not a file
    corrupt: int = 0  # a file Pillow cannot decode
    cached: int = 0
    encoded: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _decode(data: bytes) -> Image.Image | None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB")  # convert() loads the pixels: truncated files fail here
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        return None


class ImageEncoder:
    def __init__(self, model: str, batch_size: int = 64, device: str = "auto", workers: int = 4):
        offline()
        self.path: Path = local_checkpoint(model, "image encoder")
        self.batch_size, self.workers = batch_size, workers
        self.device = resolve_device(device)
        # imported here, not at module import: transformers takes seconds to import
        from transformers import AutoImageProcessor, AutoModel

        self.processor = AutoImageProcessor.from_pretrained(self.path, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.path, local_files_only=True).to(self.device).eval()
        # CLIP / SigLIP: the projected image embedding; a plain vision model: its pooled (or CLS) output
        self.joint = hasattr(self.model, "get_image_features")
        cfg = self.model.config
        if self.joint:
            self.dim = int(getattr(cfg, "projection_dim", 0) or cfg.vision_config.hidden_size)
        else:
            self.dim = int(cfg.hidden_size)

    @property
    def name(self) -> str:
        return self.path.name

    def settings(self) -> dict[str, Any]:
        return {"kind": "image", "joint": self.joint, "dtype": str(autocast_dtype(self.device))}

    def encode_images(self, images: list[Image.Image], progress: bool = True) -> np.ndarray:
        """(N, D) float32 for decoded RGB images."""
        out = np.zeros((len(images), self.dim), np.float32)
        starts = range(0, len(images), self.batch_size)
        for s in tqdm(
            starts, desc=f"image {self.name}", unit="batch", disable=not progress or len(starts) < 2
        ):
            batch = images[s : s + self.batch_size]
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
            with inference(self.device):
                if self.joint:
                    feats = self.model.get_image_features(pixel_values=pixels)
                    feats = feats if isinstance(feats, torch.Tensor) else feats.pooler_output
                else:
                    res = self.model(pixel_values=pixels)
                    pooled = getattr(res, "pooler_output", None)
                    feats = pooled if pooled is not None else res.last_hidden_state[:, 0]
                out[s : s + len(batch)] = feats.float().reshape(len(batch), -1).cpu().numpy()
        return out


def encode_image_files(
    encoder: ImageEncoder, paths: list[str | None], cache_root: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray, ImageStats]:
    """(N, D) float32 vectors, (N,) mask of images that gave one, and counts of what was missing or bad.

    An empty / None path means the item has no cover. Files are hashed by content for the cache, so only
    covers not encoded before (by this model and settings) are decoded and encoded.
    """
    stats = ImageStats(images=len(paths))
    out = np.zeros((len(paths), encoder.dim), np.float32)
    mask = np.zeros(len(paths), bool)
    rows = [i for i, p in enumerate(paths) if p]
    stats.no_path = len(paths) - len(rows)
    cache = EmbeddingCache(cache_root, namespace(encoder.path, encoder.settings()))
    chunk = max(encoder.batch_size * 16, 1024)  # bounded memory: decoded images of one chunk at a time
    with ThreadPoolExecutor(encoder.workers) as pool:
        for c in range(0, len(rows), chunk):
            part = rows[c : c + chunk]
            blobs = list(pool.map(_read, [str(paths[i]) for i in part]))
            ok = [(i, b) for i, b in zip(part, blobs, strict=True) if b is not None]
            stats.missing += len(part) - len(ok)
            keys = [content_key(b) for _, b in ok]
            hit, cached = cache.lookup(keys)
            for j in np.flatnonzero(hit):
                out[ok[j][0]], mask[ok[j][0]] = cached[j], True
            todo = np.flatnonzero(~hit)
            decoded = list(pool.map(_decode, [ok[j][1] for j in todo]))
            good = [j for j, img in zip(todo, decoded, strict=True) if img is not None]
            stats.corrupt += len(todo) - len(good)
            if good:
                vectors = encoder.encode_images([img for img in decoded if img is not None])
                idx = [ok[j][0] for j in good]
                out[idx], mask[idx] = vectors, True
                cache.add([keys[j] for j in good], vectors)
            stats.cached += int(hit.sum())
            stats.encoded += len(good)
    if stats.missing or stats.corrupt:
        log.warning(
            "images: %d missing and %d corrupt files (zero vector, mask False) of %d paths",
            stats.missing,
            stats.corrupt,
            len(rows),
        )
    return out, mask, stats
