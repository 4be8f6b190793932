"""BERT WordPiece tokenizers: train one on the corpus, or load an existing vocab.txt / tokenizer.json."""

from __future__ import annotations

import heapq
import logging
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from .config import SPECIAL_TOKENS, DataError, TokenizerConfig

log = logging.getLogger(__name__)


def bert_wordpiece(vocab: dict[str, int] | None, lowercase: bool = True) -> Tokenizer:
    """An (untrained when vocab is None) uncased-BERT-style WordPiece pipeline."""
    model = models.WordPiece(vocab, unk_token="[UNK]") if vocab else models.WordPiece(unk_token="[UNK]")
    tok = Tokenizer(model)
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    if vocab:
        tok.add_special_tokens(list(SPECIAL_TOKENS))  # matched whole in raw text, skipped by decode()
        _add_post_processor(tok)
    return tok


def _add_post_processor(tok: Tokenizer) -> None:
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )


def train_wordpiece(cfg: TokenizerConfig, texts: Iterable[str], progress: bool = False) -> Tokenizer:
    """Train on `texts`, then pad the vocab with [unusedN] tokens to exactly cfg.vocab_size.

    Padding makes the vocab size a config value the model can rely on, even for a tiny corpus.
    """
    tok = bert_wordpiece(None, cfg.lowercase)
    texts = _capped(texts, cfg.max_train_bytes)
    if cfg.trainer == "hf":
        trainer = trainers.WordPieceTrainer(
            vocab_size=cfg.vocab_size,
            min_frequency=cfg.min_frequency,
            limit_alphabet=cfg.limit_alphabet,
            special_tokens=list(SPECIAL_TOKENS),
            continuing_subword_prefix="##",
            show_progress=progress,
        )
        tok.train_from_iterator(_batched(texts), trainer=trainer)
        vocab = tok.get_vocab()
    else:
        words = count_words(tok, texts, progress)
        vocab = learn_vocab(words, cfg.vocab_size, cfg.min_frequency, cfg.limit_alphabet)
    if len(vocab) > cfg.vocab_size:
        raise DataError(
            f"tokenizer.vocab_size={cfg.vocab_size} is too small: the special tokens and the corpus "
            f"alphabet alone need {len(vocab)} entries (or lower tokenizer.limit_alphabet)"
        )
    n = len(vocab)
    for i in range(cfg.vocab_size - n):
        vocab[f"[unused{i}]"] = n + i
    tok = bert_wordpiece(vocab, cfg.lowercase)
    check_vocab(tok, "trained tokenizer")
    return tok


def count_words(tok: Tokenizer, texts: Iterable[str], progress: bool = False) -> Counter[str]:
    """Word frequencies after the tokenizer's own normalizer and pre-tokenizer (batched for speed)."""
    counts: Counter[str] = Counter()
    bar = _bar(progress)
    for batch in _batched(texts, 2000):
        text = tok.normalizer.normalize_str("\n".join(batch))  # clean_text turns the \n into a space
        counts.update(w for w, _ in tok.pre_tokenizer.pre_tokenize_str(text))
        if bar is not None:
            bar.update(sum(len(t.encode()) for t in batch))
    if bar is not None:
        bar.close()
    return counts


def learn_vocab(
    word_counts: Mapping[str, int], vocab_size: int, min_frequency: int, limit_alphabet: int
) -> dict[str, int]:
    """WordPiece vocab by greedy pair merging (what the HF WordPiece trainer does), deterministically.

    The HF trainer breaks count ties in hash order, so two builds of one config can differ in a few
    dozen tokens; here every tie goes to the pair of lower ids, and ids are assigned in a fixed order:
    specials, alphabet (sorted), "##" + alphabet (sorted), then merges in the order they were made.
    """
    vocab, allowed = _alphabet_vocab(word_counts, limit_alphabet)
    id2token = sorted(vocab, key=vocab.__getitem__)
    # words as symbol-id lists; characters outside the alphabet are dropped (they become [UNK] later)
    words: list[list[int]] = []
    counts: list[int] = []
    for word, n in sorted(word_counts.items()):
        symbols = [vocab[ch if i == 0 else "##" + ch] for i, ch in enumerate(word) if ch in allowed]
        if len(symbols) > 1:
            words.append(symbols)
            counts.append(n)
    pair_counts: Counter[tuple[int, int]] = Counter()
    where: dict[tuple[int, int], set[int]] = {}
    for i, (symbols, n) in enumerate(zip(words, counts, strict=True)):
        for pair in pairwise(symbols):
            pair_counts[pair] += n
            where.setdefault(pair, set()).add(i)
    heap = [(-n, pair) for pair, n in pair_counts.items()]
    heapq.heapify(heap)

    while len(vocab) < vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        n = pair_counts.get(pair, 0)
        if -neg != n:  # stale entry: requeue with the current count
            if n > 0:
                heapq.heappush(heap, (-n, pair))
            continue
        if n < max(1, min_frequency):
            break
        a, b = pair
        right = id2token[b]
        token = id2token[a] + (right[2:] if right.startswith("##") else right)
        new = vocab.get(token)
        if new is None:
            new = vocab[token] = len(id2token)
            id2token.append(token)
        touched = set()
        for i in where.pop(pair, ()):
            touched |= _merge_in(words, counts, i, pair, new, pair_counts, where)
        del pair_counts[pair]
        for p in sorted(touched):
            if pair_counts[p] > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
    return vocab


def _alphabet_vocab(word_counts: Mapping[str, int], limit_alphabet: int) -> tuple[dict[str, int], set[str]]:
    """Specials, then the limit_alphabet most frequent characters (sorted) and their "##" forms: the starting
    vocabulary, and the characters kept."""
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    chars: Counter[str] = Counter()
    for word, n in word_counts.items():
        for ch in word:
            chars[ch] += n
    alphabet = sorted(ch for ch, _ in sorted(chars.items(), key=lambda kv: (-kv[1], kv[0]))[:limit_alphabet])
    allowed = set(alphabet)
    inner = sorted({ch for word in word_counts for ch in word[1:] if ch in allowed})
    for token in [*alphabet, *("##" + ch for ch in inner)]:
        vocab.setdefault(token, len(vocab))
    return vocab, allowed


def _merge_in(words: list[list[int]], counts: list[int], i: int, pair: tuple[int, int], new: int,
              pair_counts: Counter[tuple[int, int]], where: dict[tuple[int, int], set[int]]) -> set[tuple[int, int]]:
    """Replace `pair` by `new` in word i, updating the pair counts; returns the pairs with `new` that grew."""
    a, b = pair
    old, merged, j = words[i], [], 0
    while j < len(old):
        if j + 1 < len(old) and old[j] == a and old[j + 1] == b:
            merged.append(new)
            j += 2
        else:
            merged.append(old[j])
            j += 1
    if len(merged) == len(old):
        return set()
    touched = set()
    for p in pairwise(old):
        pair_counts[p] -= counts[i]
    for p in pairwise(merged):
        pair_counts[p] += counts[i]
        if new in p:  # only pairs with the new token can have grown
            where.setdefault(p, set()).add(i)
            touched.add(p)
    words[i] = merged
    return touched


def load_pretrained(cfg: TokenizerConfig) -> Tokenizer:
    """A BERT vocab.txt, a tokenizer.json, a directory holding one of them, or a hub id (online only)."""
    path = Path(str(cfg.path)).expanduser()
    if path.is_dir():
        for name in ("tokenizer.json", "vocab.txt"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise DataError(f"tokenizer.path={cfg.path}: directory has neither tokenizer.json nor vocab.txt")
    if path.is_file() and path.suffix == ".json":
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:
            raise DataError(f"tokenizer.path={path}: not a valid tokenizer.json ({e})") from e
        if not isinstance(tok.model, models.WordPiece):
            raise DataError(f"{path}: a {type(tok.model).__name__} model; a BERT WordPiece tokenizer is required")
    elif path.is_file():
        tok = bert_wordpiece(read_vocab_txt(path), cfg.lowercase)
    elif not str(cfg.path).startswith((".", "/", "~")) and path.suffix not in (".txt", ".json"):
        try:  # a hub id such as google-bert/bert-base-uncased
            tok = Tokenizer.from_pretrained(str(cfg.path))
        except Exception as e:
            raise DataError(
                f"tokenizer.path={cfg.path!r} is not a local file and could not be fetched from the hub ({e})"
            ) from e
    else:
        raise DataError(f"tokenizer.path={cfg.path}: no such file")
    if tok.truncation is not None or tok.padding is not None:  # would cut or pad the corpus' units
        log.warning("%s: turning off the truncation/padding saved in this tokenizer", path)
        tok.no_truncation()
        tok.no_padding()
    check_vocab(tok, str(path))
    if tok.get_vocab_size() != cfg.vocab_size:
        raise DataError(
            f"tokenizer.path={cfg.path} has {tok.get_vocab_size()} tokens but tokenizer.vocab_size="
            f"{cfg.vocab_size}; set tokenizer.vocab_size={tok.get_vocab_size()}"
        )
    if tok.post_processor is None:
        _add_post_processor(tok)
    return tok


VOCAB_FORMAT = "a BERT vocab.txt: UTF-8 text, one token per line, the line number (from 0) being its id"
_TABLE_ROW = re.compile(r"^\S+[,;\t ]\d+$")  # "token,id": a CSV/TSV table, not a vocab.txt


def read_vocab_txt(path: Path) -> dict[str, int]:
    """Token -> id of a vocab.txt; a file in another format (CSV, binary, ...) is named with the expected
    format rather than failing later on a missing or misplaced [PAD]."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.start}); expected {VOCAB_FORMAT}") from e
    if "\x00" in text:
        raise DataError(f"{path} holds NUL bytes (a binary file?); expected {VOCAB_FORMAT}")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    rows = sum(1 for line in lines if _TABLE_ROW.match(line.rstrip("\r")))
    if lines and rows > len(lines) // 2:
        raise DataError(f"{path}: {rows} of {len(lines)} lines look like 'token,id' table rows (line 1: "
                        f"{lines[0][:40]!r}); expected {VOCAB_FORMAT}")
    vocab: dict[str, int] = {}
    for lineno, line in enumerate(lines, 1):
        token = line.rstrip("\r")
        if token.strip() != token or any(ch.isspace() for ch in token):
            raise DataError(f"{path} line {lineno}: {token[:40]!r} holds whitespace, which no WordPiece token "
                            f"has; expected {VOCAB_FORMAT}")
        if token in vocab:
            raise DataError(f"{path} line {lineno}: duplicate token {token!r}")
        vocab[token] = len(vocab)
    return vocab


def check_vocab(tok: Tokenizer, where: str) -> None:
    """Specials present with [PAD]=0, and ids 0..V-1 contiguous (so vocab.txt can represent it)."""
    vocab = tok.get_vocab()
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise DataError(f"{where}: special token(s) {missing} missing from the vocabulary")
    if vocab["[PAD]"] != 0:
        raise DataError(f"{where}: [PAD] has id {vocab['[PAD]']}, the model needs it at 0")
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise DataError(f"{where}: token ids are not contiguous 0..{len(vocab) - 1}")


def save(tok: Tokenizer, directory: Path) -> None:
    """tokenizer.json and vocab.txt (one token per line, line number = id)."""
    tok.save(str(directory / "tokenizer.json"))
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    with open(directory / "vocab.txt", "w", encoding="utf-8") as f:
        f.writelines(token + "\n" for token, _ in vocab)


def _bar(progress: bool) -> Any:
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(unit="B", unit_scale=True, desc="count words", file=sys.stderr)


def _capped(texts: Iterable[str], max_bytes: int | None) -> Iterator[str]:
    n = 0
    for t in texts:
        yield t
        n += len(t.encode())
        if max_bytes is not None and n >= max_bytes:
            return


def _batched(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    batch: list[str] = []
    for t in texts:
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
