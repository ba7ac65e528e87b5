"""Offline tokenizers, and checks that a loaded tokenizer is not silently broken.

With transformers 5 and the hub offline, ``from_pretrained`` on a hub id can return a tokenizer
of a handful of tokens without raising, so that every word becomes unknown. Everything that loads
a tokenizer in this project checks its vocabulary size with :func:`check_tokenizer`.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path

from crdiff_search.errors import ModelSourceError

CLIP_VOCAB_SIZE = 49408
_N_MERGES = 49152 - 256 - 2


class TokenizerError(ModelSourceError, RuntimeError):
    """A tokenizer is missing or incomplete (a model-source problem: exit code 4)."""


def check_tokenizer(tokenizer, *, min_vocab: int, what: str = "tokenizer") -> None:
    """Raise :class:`TokenizerError` if ``tokenizer`` has fewer than ``min_vocab`` tokens.

    >>> check_tokenizer(clip_tokenizer(), min_vocab=49408)
    """
    size = len(tokenizer)
    if size < min_vocab:
        raise TokenizerError(
            f"{what} has only {size} tokens (expected at least {min_vocab}): it was not loaded "
            "completely, which happens offline when the vocabulary files are missing. Point the "
            "model source at a local folder that holds the tokenizer files (vocab.json and "
            "merges.txt for CLIP, vocab.txt for BERT), or fill the Hugging Face cache while online."
        )


def _bytes_to_unicode() -> dict[int, str]:
    # The reversible byte -> printable-character table of GPT-2 style byte-level BPE.
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    # Order matters: token ids follow this table's insertion order (printable bytes first).
    table = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table


def write_clip_tokenizer_files(directory: str | os.PathLike) -> Path:
    """Write a complete CLIP BPE tokenizer (vocab.json, merges.txt, configs) to ``directory``.

    The vocabulary is derived from the BPE file that ships inside open_clip, so no network is
    needed; token ids equal open_clip's and OpenAI CLIP's (49,408 tokens).
    """
    from open_clip.tokenizer import default_bpe

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with gzip.open(default_bpe()) as fh:
        lines = fh.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _N_MERGES + 1]]
    base = list(_bytes_to_unicode().values())
    vocab = base + [v + "</w>" for v in base] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == CLIP_VOCAB_SIZE
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n"
    )
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    (directory / "special_tokens_map.json").write_text(json.dumps(special))
    config = dict(special, model_max_length=77, do_lower_case=True, tokenizer_class="CLIPTokenizer")
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


@lru_cache(maxsize=4)
def _cached_clip_tokenizer(directory: str):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(directory)
    check_tokenizer(tok, min_vocab=CLIP_VOCAB_SIZE, what="CLIP tokenizer")
    return tok


def clip_tokenizer(directory: str | os.PathLike | None = None):
    """A complete ``transformers.CLIPTokenizer`` built offline.

    With ``directory``, the files are written there (and can be saved with a pipeline);
    otherwise a per-process temporary folder is used.
    """
    if directory is None:
        directory = Path(tempfile.gettempdir()) / f"crdiff-clip-tokenizer-{os.getuid()}"
        if not (directory / "merges.txt").exists():
            write_clip_tokenizer_files(directory)
    else:
        write_clip_tokenizer_files(directory)
    return _cached_clip_tokenizer(str(directory))
