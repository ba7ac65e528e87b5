"""FID and KID of a set of generated images against a reference image folder (torchmetrics).

Both are set metrics, used by evaluation and rerank rather than per trial. Features come from
the TF-ported InceptionV3 (2048-d pool features; torchmetrics' ``NoTrainInceptionV3`` from
torch-fidelity, the network behind the standard FID numbers); the Fréchet distance and the
polynomial-kernel MMD are torchmetrics' ``FrechetInceptionDistance`` and
``KernelInceptionDistance``. The reference folder's features are computed once and cached on
disk, keyed by the folder's file list (names, sizes, modification times) and the feature
extractor's weights, so a changed folder or extractor is never served stale statistics.

Inception weights (``weights-inception-2015-12-05-6726825d.pth``) come from
``inception_weights=/path``, ``$CRDIFF_INCEPTION_WEIGHTS`` or the torch hub cache; they are
never downloaded here.

``score(images, prompts)`` returns the set's value once per image (so ``aggregate`` gives the
set's FID); :meth:`FidObjective.compute` gives FID and KID together.

Example::

    fid = FidObjective(reference="data/coco-val-5k")
    fid.compute(images)   # {'fid': 23.4, 'kid_mean': 0.011, 'kid_std': 0.001, ...}
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from torch import nn

from crdiff_search.errors import UsageError
from crdiff_search.objectives._common import (
    check_batch,
    pick_device,
    resolve_file,
    to_pil,
)
from crdiff_search.objectives.base import Objective

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
ENV_WEIGHTS = "CRDIFF_INCEPTION_WEIGHTS"
ENV_REFERENCE = "CRDIFF_FID_REFERENCE"
ENV_CACHE = "CRDIFF_CACHE_DIR"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_HOW = (
    f"download {INCEPTION_FILE} (torch-fidelity's release assets) and pass "
    f"inception_weights=/path, set ${ENV_WEIGHTS}, or put it in the torch hub cache "
    "(<torch.hub.get_dir()>/checkpoints/)"
)


class _FeatureTable(nn.Module):
    """Hands precomputed features to the torchmetrics metrics (which then only do the math)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def inception_extractor(weights: str | os.PathLike | None = None) -> nn.Module:
    """torchmetrics' InceptionV3 (2048-d features of uint8 images), weights loaded safely."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    hub_file = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if weights is None and not os.environ.get(ENV_WEIGHTS) and hub_file.is_file():
        weights = hub_file
    path = resolve_file(weights, what="FID InceptionV3", env_var=ENV_WEIGHTS, how=_HOW)
    state = torch.load(path, map_location="cpu", weights_only=True)
    # torch-fidelity would torch.load the file itself without weights_only; hand it the
    # tensors loaded above instead.
    with mock.patch.object(torch, "load", lambda *a, **k: state):
        return NoTrainInceptionV3("inception-v3-compat", ["2048"], str(path))


def _fingerprint(module: nn.Module) -> str:
    digest = hashlib.sha256(type(module).__qualname__.encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def _folder_listing(folder: Path) -> list[Path]:
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if len(files) < 2:
        raise UsageError(f"reference folder {folder} holds {len(files)} images; FID needs >= 2")
    return files


def _uint8(image: Any) -> torch.Tensor:
    array = np.asarray(to_pil(image).convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


class FidObjective(Objective):
    """FID of the scored set against ``reference`` (lower is better); KID alongside."""

    name = "fid"
    higher_is_better = False
    per_image = False

    def __init__(
        self,
        *,
        reference: str | os.PathLike | None = None,
        inception_weights: str | os.PathLike | None = None,
        extractor: nn.Module | None = None,
        cache_dir: str | os.PathLike | None = None,
        device: str | None = None,
        batch_size: int = 32,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        seed: int = 0,
    ):
        if batch_size < 1 or kid_subsets < 1 or kid_subset_size < 2:
            raise UsageError(
                "batch_size and kid_subsets must be >= 1 and kid_subset_size >= 2, got "
                f"{batch_size}, {kid_subsets}, {kid_subset_size}"
            )
        reference = reference if reference is not None else os.environ.get(ENV_REFERENCE)
        if reference is None or not Path(reference).is_dir():
            raise UsageError(
                f"FID needs a reference image folder: pass reference=/path or set "
                f"${ENV_REFERENCE} (got {reference!r})"
            )
        self.reference = Path(reference).resolve()
        self.files = _folder_listing(self.reference)
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.kid_subsets = kid_subsets
        self.kid_subset_size = kid_subset_size
        self.seed = seed
        self.cache_dir = (
            Path(cache_dir or os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "crdiff-search")
            / "fid"
        )
        self.extractor = (
            extractor if extractor is not None else inception_extractor(inception_weights)
        )
        self.extractor.eval().requires_grad_(False).to(self.device)
        self.reference_features = self._reference_features()

    @torch.inference_mode()
    def features(self, images: Sequence[Any]) -> torch.Tensor:
        """(N, D) float32 features; images are batched by size (the extractor resizes)."""
        tensors = [_uint8(im) for im in images]
        out: list[torch.Tensor | None] = [None] * len(tensors)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, t in enumerate(tensors):
            by_size.setdefault(tuple(t.shape[1:]), []).append(i)
        for indices in by_size.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                batch = torch.stack([tensors[i] for i in chunk]).to(self.device)
                feats = self.extractor(batch)
                feats = feats[0] if isinstance(feats, tuple | list) else feats
                for i, f in zip(chunk, feats.reshape(len(chunk), -1).float().cpu(), strict=True):
                    out[i] = f
        return torch.stack(out)

    def cache_path(self) -> Path:
        digest = hashlib.sha256(_fingerprint(self.extractor).encode())
        for path in self.files:
            stat = path.stat()
            digest.update(
                f"{path.relative_to(self.reference)}|{stat.st_size}|{stat.st_mtime_ns}".encode()
            )
        return self.cache_dir / f"{self.reference.name}-{digest.hexdigest()[:20]}.npy"

    def _reference_features(self) -> torch.Tensor:
        from PIL import Image

        path = self.cache_path()
        if path.is_file():
            return torch.from_numpy(np.load(path))
        features = []
        for start in range(0, len(self.files), 256):
            images = []
            for file in self.files[start : start + 256]:
                with Image.open(file) as im:
                    images.append(im.convert("RGB"))
            features.append(self.features(images))
        features = torch.cat(features)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
        np.save(tmp, features.numpy())
        os.replace(tmp, path)
        return features

    def compute(self, images: Sequence[Any]) -> dict[str, float]:
        """FID and KID (mean, std over subsets) of ``images`` against the reference."""
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        if len(images) < 2:
            raise UsageError(f"FID/KID need at least 2 images, got {len(images)}")
        fake = self.features(images)
        real = self.reference_features
        table = _FeatureTable(real.shape[1])
        fid = FrechetInceptionDistance(feature=table, reset_real_features=False)
        fid.update(real, real=True)
        fid.update(fake, real=False)
        subset = min(self.kid_subset_size, len(fake), len(real))
        with warnings.catch_warnings():
            # Keeping all features is the point here (they are already in memory).
            warnings.filterwarnings("ignore", message=".*will save all extracted features")
            kid = KernelInceptionDistance(
                feature=table,
                subsets=self.kid_subsets,
                subset_size=subset,
                reset_real_features=False,
            )
        kid.update(real, real=True)
        kid.update(fake, real=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            kid_mean, kid_std = kid.compute()
        return {
            "fid": float(fid.compute()),
            "kid_mean": float(kid_mean),
            "kid_std": float(kid_std),
            "n_images": len(fake),
            "n_reference": len(real),
        }

    def _value(self, result: dict[str, float]) -> float:
        return result["fid"]

    def score(self, images: Sequence[Any], prompts: Sequence[str] | None = None) -> np.ndarray:
        check_batch(images, prompts)
        return np.full(len(images), self._value(self.compute(images)), dtype=np.float64)

    def parts(self, images: Sequence[Any], prompts: Sequence[str] | None = None):
        import pandas as pd

        return pd.DataFrame([self.compute(images)])


class KidObjective(FidObjective):
    """KID (mean over subsets) of the scored set against ``reference``; lower is better."""

    name = "kid"

    def _value(self, result: dict[str, float]) -> float:
        return result["kid_mean"]
