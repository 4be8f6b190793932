"""Raw text -> tokenizer + packed example shards in data/<corpus>-<config hash>/, built atomically.

Directory layout (everything described by manifest.json, which is written last):
    tokenizer.json, vocab.txt     the vocabulary the ids refer to
    shard-00000.bin ...           token ids of all examples back to back (uint16 when the vocab fits)
    index.bin                     int32 [examples, 4]: shard, offset in shard, length, start of segment B
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import socket
import sys
import time
import uuid
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..io import read_json, sha256_file
from ..settings import check_seed
from . import corpus as corpus_mod
from . import tokenizer as tok_mod
from .builder import build_chunk, init_worker
from .config import SPECIAL_TOKENS, CorpusConfig, DataError, TokenizerConfig, from_mapping

FORMAT_VERSION = 1
CHUNK_BYTES = 1 << 18  # documents are cut into ~256 KB chunks; part of the format (seeds are per chunk)
SHARD_TOKENS = 1 << 27  # a new shard file every ~128M tokens
INDEX_COLUMNS = ("shard", "offset", "length", "b_start")
# what prepare() uses when its caller does not say: conf/shards/default.yaml's values (tests/test_one_home.py)
DATA_SEED = 12345
HELDOUT_FRACTION = 0.05
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]  # tmp dirs on shared disks


def prepare(
    corpus: Mapping[str, Any],
    tokenizer: Mapping[str, Any],
    max_seq_length: int = 128,
    seed: int = DATA_SEED,
    num_workers: int = 2,
    data_dir: str | Path = "data",
    progress: bool = True,
    heldout_fraction: float = HELDOUT_FRACTION,
) -> Path:
    """Return data_dir/<corpus.name>-<hash> for this config, building it first unless already finished.

    The hash covers the corpus and tokenizer configs, max_seq_length, seed, the held-out fraction and a
    cheap fingerprint of the inputs (file sizes/mtimes, the Python version for pydocs); not num_workers,
    which never changes the output.
    """
    ccfg, tcfg, key, final = _resolve(corpus, tokenizer, max_seq_length, seed, num_workers, data_dir,
                                      heldout_fraction)
    if final.exists():
        check_files(final)  # a finished dir: reuse it (a missing/damaged file is an error, not a rebuild)
        return final

    data_dir = final.parent
    data_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(data_dir)
    tmp = data_dir / f".tmp-{final.name}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _build(tmp, ccfg, tcfg, key, max_seq_length, int(seed), num_workers, progress)
        try:
            os.rename(tmp, final)  # atomic: the dir appears complete or not at all
        except OSError:
            if not (final / "manifest.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # a concurrent build of the same config won
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DataError(f"{os.strerror(e.errno)} while building {final}; the partial build was removed. Free "
                            "some space in that data dir (or choose another one) and rerun") from e
        raise
    return final


def data_path(corpus: Mapping[str, Any], tokenizer: Mapping[str, Any], max_seq_length: int = 128,
              seed: int = DATA_SEED, num_workers: int = 2, data_dir: str | Path = "data",
              heldout_fraction: float = HELDOUT_FRACTION, **_: Any) -> Path:
    """Where `prepare` with these arguments puts its data dir, without building it (other ranks wait for
    it to appear while rank 0 builds)."""
    return _resolve(corpus, tokenizer, max_seq_length, seed, num_workers, data_dir, heldout_fraction)[3]


def _resolve(corpus: Mapping[str, Any], tokenizer: Mapping[str, Any], max_seq_length: int, seed: int,
             num_workers: int, data_dir: str | Path, heldout_fraction: float) -> tuple:
    """(corpus config, tokenizer config, cache key, final dir) of a prepare call."""
    ccfg: CorpusConfig = from_mapping(CorpusConfig, "corpus", corpus)
    tcfg: TokenizerConfig = from_mapping(TokenizerConfig, "tokenizer", tokenizer)
    if not isinstance(max_seq_length, int) or max_seq_length < 5:
        raise DataError(f"max_seq_length={max_seq_length!r} must be an integer >= 5")
    check_seed("seed", seed, error=DataError)
    if not isinstance(num_workers, int) or num_workers < 0:
        raise DataError(f"num_workers={num_workers!r} must be a non-negative integer")
    key = {
        "format_version": FORMAT_VERSION,
        "corpus": _corpus_key(ccfg),
        "tokenizer": dataclasses.asdict(tcfg),
        "max_seq_length": max_seq_length,
        "seed": int(seed),
        "inputs": {"corpus": corpus_mod.fingerprint(ccfg), "tokenizer": _tokenizer_fingerprint(tcfg)},
    }
    if isinstance(heldout_fraction, bool) or not isinstance(heldout_fraction, int | float) \
            or not 0 <= heldout_fraction < 1:
        raise DataError(f"heldout_fraction={heldout_fraction!r} must be in [0, 1)")
    if heldout_fraction:  # only when used: data dirs built before held-out splits existed keep their name
        key["heldout_fraction"] = float(heldout_fraction)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    final = Path(data_dir).expanduser().resolve() / f"{ccfg.name}-{digest}"
    return ccfg, tcfg, key, final


def _build(
    tmp: Path,
    ccfg: CorpusConfig,
    tcfg: TokenizerConfig,
    key: dict,
    max_seq_length: int,
    seed: int,
    num_workers: int,
    progress: bool,
) -> None:
    """Tokenizer, shards and (last) manifest.json into `tmp`."""
    t0 = time.time()
    tok = _tokenizer(tmp, ccfg, tcfg, progress)
    dtype = np.dtype(np.uint16 if tok.get_vocab_size() <= 1 << 16 else np.int32)
    fraction = key.get("heldout_fraction", 0.0)
    writers = {False: _ShardWriter(tmp, dtype), True: _ShardWriter(tmp, dtype, prefix="heldout-")}
    init_args = (tok.to_str(), max_seq_length, seed, dtype.str, ccfg.overflow)
    counts = _write_shards(ccfg, writers, init_args, num_workers, fraction, progress)
    if counts[False]["documents"] == 0:
        raise DataError(f"corpus {ccfg.name!r} is empty: {_describe(ccfg)} gave no non-blank text")
    if writers[False].examples == 0:
        raise DataError(f"corpus {ccfg.name!r} produced no tokens with this tokenizer: {_describe(ccfg)}")
    for c in counts.values():
        c["kept_fraction"] = 1 - c["truncated_tokens"] / c["corpus_tokens"] if c["corpus_tokens"] else 1.0
    report_kept(ccfg, counts[False], counts[True] if fraction else None, progress)
    manifest = _manifest(tmp, ccfg, key, tok, dtype, writers, counts, max_seq_length)
    manifest["build_seconds"] = round(time.time() - t0, 3)
    with open(tmp / "manifest.json", "w") as f:
        json.dump(manifest, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def _tokenizer(tmp: Path, ccfg: CorpusConfig, tcfg: TokenizerConfig, progress: bool) -> Any:
    """The vocabulary, trained on the corpus (wordpiece) or loaded (pretrained), saved into `tmp`."""
    if tcfg.kind == "wordpiece":
        pipes = [p for p in corpus_mod.resolve_paths(ccfg.paths) if not p.is_file()] if ccfg.source == "text" else []
        if pipes:
            raise DataError(f"corpus.paths: {pipes[0]} is a pipe, which can be read once, but tokenizer=wordpiece "
                            "reads the corpus twice (vocab, then shards): save it to a file or use "
                            "tokenizer=pretrained")
        seen = [0]

        def units() -> Iterator[str]:
            for doc in corpus_mod.iter_documents(ccfg):
                seen[0] += 1
                yield from doc

        tok = tok_mod.train_wordpiece(tcfg, units(), progress=progress)
        if seen[0] == 0:
            raise DataError(f"corpus {ccfg.name!r} is empty: {_describe(ccfg)} gave no non-blank text")
    else:
        tok = tok_mod.load_pretrained(tcfg)
    tok_mod.save(tok, tmp)
    return tok


def _write_shards(ccfg: CorpusConfig, writers: dict[bool, _ShardWriter], init_args: tuple, num_workers: int,
                  fraction: float, progress: bool) -> dict[bool, dict[str, int]]:
    """Tokenize the corpus into the training (False) and held-out (True) writers; their counts."""
    counts = {held: dict(documents=0, units=0, bytes=0, corpus_tokens=0, truncated_tokens=0) for held in writers}
    bar = None

    def on_result(res: dict) -> None:
        held = isinstance(res["index"], str)  # held-out chunks are numbered "heldout-<n>"
        writers[held].add(res["tokens"], res["lengths"], res["b_starts"])
        for k in ("documents", "units", "corpus_tokens", "truncated_tokens", "bytes"):
            counts[held][k] += res[k]
        if bar is not None:
            bar.update(res["bytes"])

    def make_bar() -> Any:
        nonlocal bar
        if progress:
            from tqdm import tqdm

            total = corpus_mod.estimated_bytes(ccfg)
            bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"tokenize {ccfg.name}", file=sys.stderr)
        return bar

    try:
        _run_chunks(_chunks(corpus_mod.iter_documents(ccfg), fraction), num_workers, init_args, on_result,
                    make_bar)
    finally:
        if bar is not None:
            bar.close()
    for w in writers.values():
        w.close()
    return counts


def _manifest(tmp: Path, ccfg: CorpusConfig, key: dict, tok: Any, dtype: np.dtype,
              writers: dict[bool, _ShardWriter], counts: dict[bool, dict], max_seq_length: int) -> dict:
    import tokenizers

    writer, held = writers[False], writers[True]
    files = {name: _file_entry(tmp / name) for name in ("tokenizer.json", "vocab.txt")}
    files.update(writer.file_entries())
    heldout = None
    if key.get("heldout_fraction"):
        files.update(held.file_entries())
        heldout = {
            "fraction": key["heldout_fraction"],
            "selection": "documents whose sha256 (of their text) falls below the fraction",
            "counts": {**counts[True], "examples": held.examples, "tokens": held.total_tokens},
            "shards": held.shards,
            "index": {"file": held.index_name, "dtype": "int32", "columns": list(INDEX_COLUMNS),
                      "rows": held.examples},
        }
    return {
        "format_version": FORMAT_VERSION,
        "name": ccfg.name,
        "config": {k: key[k] for k in ("corpus", "tokenizer", "max_seq_length", "seed")},
        "inputs": key["inputs"],
        "vocab_size": tok.get_vocab_size(),
        "max_seq_length": max_seq_length,
        "dtype": dtype.name,
        "special_tokens": {t: tok.token_to_id(t) for t in SPECIAL_TOKENS},
        "counts": {**counts[False], "examples": writer.examples, "tokens": writer.total_tokens,
                   "single_segment_examples": writer.single_segment},
        "shards": writer.shards,
        "index": {"file": "index.bin", "dtype": "int32", "columns": list(INDEX_COLUMNS), "rows": writer.examples},
        "heldout": heldout,
        "files": files,
        "versions": {"python": sys.version.split()[0], "tokenizers": tokenizers.__version__, "numpy": np.__version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


MAX_DROPPED = 0.01  # a build that loses more of its corpus than this says so in a warning


def report_kept(ccfg: CorpusConfig, counts: dict, held: dict | None, log: bool) -> None:
    """The share of the corpus's tokens that reached the shards (all of it with corpus.overflow=split); a
    warning when more than MAX_DROPPED of either split was cut."""
    parts = [("training", counts)] + ([("held-out", held)] if held else [])
    if log:
        print(f"{ccfg.name}: " + "; ".join(f"{what} split {c['corpus_tokens'] - c['truncated_tokens']:,} of "
                                           f"{c['corpus_tokens']:,} corpus tokens in the shards "
                                           f"({100 * c['kept_fraction']:.1f}%)" for what, c in parts),
              file=sys.stderr)
    for what, c in parts:
        if 1 - c["kept_fraction"] > MAX_DROPPED:
            warnings.warn(f"corpus {ccfg.name!r}: the {what} split lost {c['truncated_tokens']:,} of its "
                          f"{c['corpus_tokens']:,} tokens ({100 * (1 - c['kept_fraction']):.1f}%) to "
                          f"corpus.overflow={ccfg.overflow}: units (lines, paragraphs) longer than what was left "
                          "of their example were cut. corpus.overflow=split keeps them.", stacklevel=3)


def is_heldout(doc: list[str], fraction: float) -> bool:
    """A document is held out when the first 8 bytes of the sha256 of its text, as a number in [0, 1), fall
    below `fraction`: deterministic, independent of corpus order, workers and chunking."""
    if fraction <= 0:
        return False
    h = hashlib.sha256("\n".join(doc).encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction


def _chunks(docs: Iterable[list[str]], heldout_fraction: float = 0.0) -> Iterator[tuple[Any, list[list[str]], int]]:
    """(chunk index, documents, bytes): whole documents, cut after ~CHUNK_BYTES of text. Held-out documents
    go to their own chunks, numbered "heldout-<n>", so that the training chunks are those of the remaining
    documents."""
    batches: dict[bool, list] = {False: [[], 0, 0], True: [[], 0, 0]}  # documents, size, next index

    def cut(held: bool) -> tuple[Any, list[list[str]], int]:
        batch = batches[held]
        out = (f"heldout-{batch[2]}" if held else batch[2], batch[0], batch[1])
        batches[held] = [[], 0, batch[2] + 1]
        return out

    for doc in docs:
        held = is_heldout(doc, heldout_fraction)
        batch = batches[held]
        batch[0].append(doc)
        batch[1] += sum(len(u.encode()) for u in doc)
        if batch[1] >= CHUNK_BYTES:
            yield cut(held)
    for held in (False, True):
        if batches[held][0]:
            yield cut(held)


def _run_chunks(
    chunks: Iterator[tuple[Any, list[list[str]], int]],
    num_workers: int,
    init_args: tuple,
    on_result: Callable[[dict], None],
    start_progress: Callable[[], Any],
) -> None:
    """Build chunks on num_workers processes (in this process when <= 1), handing results back in order."""
    if num_workers <= 1:
        init_worker(*init_args)
        start_progress()
        for index, docs, size in chunks:
            on_result({**build_chunk((index, docs)), "bytes": size})
        return
    # fork: workers start instantly and need no re-import; the pool is made before any thread of ours
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with _env(TOKENIZERS_PARALLELISM="false"):  # one tokenizer thread per worker, and no fork warning
        pool = mp.get_context(method).Pool(num_workers, initializer=init_worker, initargs=init_args)
    try:
        start_progress()
        pending: deque = deque()  # bounded, so a huge corpus is never read far ahead of the workers
        for index, docs, size in chunks:
            pending.append((pool.apply_async(build_chunk, ((index, docs),)), size))
            if len(pending) >= 2 * num_workers:
                res, size = pending.popleft()
                on_result({**res.get(), "bytes": size})
        while pending:
            res, size = pending.popleft()
            on_result({**res.get(), "bytes": size})
        pool.close()
        pool.join()
    finally:
        pool.terminate()


class _ShardWriter:
    def __init__(self, directory: Path, dtype: np.dtype, prefix: str = "") -> None:
        self.dir, self.dtype, self.prefix = directory, dtype, prefix
        self.index_name = f"{prefix}index.bin"
        self.shards: list[dict] = []
        self._hashes: dict[str, Any] = {self.index_name: hashlib.sha256()}
        self._index = open(directory / self.index_name, "wb")
        self._shard = None
        self.examples = self.total_tokens = self.single_segment = 0

    def add(self, tokens: np.ndarray, lengths: np.ndarray, b_starts: np.ndarray) -> None:
        if len(lengths) == 0:
            return
        if self._shard is None or self.shards[-1]["tokens"] + len(tokens) > SHARD_TOKENS:
            self._open_shard()
        info = self.shards[-1]
        offsets = info["tokens"] + np.concatenate([[0], np.cumsum(lengths[:-1], dtype=np.int64)])
        rows = np.stack([np.full_like(lengths, len(self.shards) - 1), offsets.astype(np.int32), lengths, b_starts], 1)
        self._write(self._shard, info["file"], tokens.astype(self.dtype, copy=False).tobytes())
        self._write(self._index, self.index_name, np.ascontiguousarray(rows, dtype=np.int32).tobytes())
        info["tokens"] += len(tokens)
        info["examples"] += len(lengths)
        self.examples += len(lengths)
        self.total_tokens += len(tokens)
        self.single_segment += int((b_starts == lengths).sum())

    def _open_shard(self) -> None:
        if self._shard is not None:
            self._shard.close()
        name = f"{self.prefix}shard-{len(self.shards):05d}.bin"
        self._shard = open(self.dir / name, "wb")
        self._hashes[name] = hashlib.sha256()
        self.shards.append({"file": name, "tokens": 0, "examples": 0})

    def _write(self, f: Any, name: str, data: bytes) -> None:
        f.write(data)
        self._hashes[name].update(data)

    def close(self) -> None:
        for f in (self._shard, self._index):
            if f is not None:
                f.flush()
                os.fsync(f.fileno())
                f.close()

    def file_entries(self) -> dict[str, dict]:
        return {
            name: {"bytes": (self.dir / name).stat().st_size, "sha256": h.hexdigest()}
            for name, h in self._hashes.items()
        }


# ------------------------------------------------------------------------------- reading a data dir
def read_manifest(directory: str | Path) -> dict:
    """The manifest of a finished data dir; a clear error for a missing, unfinished or foreign dir."""
    directory = Path(directory)
    path = directory / "manifest.json"
    if not directory.is_dir():
        raise DataError(f"data dir {directory} does not exist (run `make data` / pipelines.prepare first)")
    if not path.is_file():
        raise DataError(f"{directory} has no manifest.json: it is not a finished data dir (an interrupted build?)")
    manifest = read_json(path, DataError)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{path}: format_version {manifest.get('format_version')!r}, this code reads {FORMAT_VERSION}; rebuild it"
        )
    return manifest


def check_files(directory: str | Path, checksums: bool = False) -> dict:
    """Every file the manifest lists exists with its recorded size (and sha256 when checksums=True)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    for name, entry in manifest["files"].items():
        path = directory / name
        if not path.is_file():
            raise DataError(f"{directory}: {name} is missing (listed in manifest.json); delete the dir to rebuild")
        if path.stat().st_size != entry["bytes"]:
            raise DataError(f"{directory}: {name} has {path.stat().st_size} bytes, manifest.json says {entry['bytes']}")
        if checksums and sha256_file(path) != entry["sha256"]:
            raise DataError(f"{directory}: {name} does not match its sha256 in manifest.json")
    return manifest


def check_compatible(directory: str | Path, vocab_size: int, max_seq_length: int | None = None) -> dict:
    """Raise DataError unless the data dir is finished and was built for this vocab (and length)."""
    manifest = check_files(directory)
    tok = load_shards_tokenizer(directory)
    if tok.get_vocab_size() != manifest["vocab_size"]:
        raise DataError(
            f"{directory}: tokenizer.json has {tok.get_vocab_size()} tokens, manifest.json says "
            f"{manifest['vocab_size']}"
        )
    if manifest["vocab_size"] != vocab_size:
        raise DataError(
            f"{directory} was tokenized with a {manifest['vocab_size']}-token vocabulary but the model has "
            f"vocab_size={vocab_size}; use model vocab_size={manifest['vocab_size']} or rebuild the data "
            f"with the model's tokenizer"
        )
    if max_seq_length is not None and manifest["max_seq_length"] != max_seq_length:
        raise DataError(
            f"{directory} holds examples of max_seq_length={manifest['max_seq_length']}, requested {max_seq_length}"
        )
    return manifest


def load_shards_tokenizer(directory: str | Path) -> Any:
    """The tokenizers.Tokenizer the shards' ids refer to: tokenizer.json in a data dir, or the copy a
    pretraining run dir keeps. (A pretrained model's vocabulary, tokenizer.json or vocab.txt, is loaded by
    convbert.finetune instead.)"""
    from tokenizers import Tokenizer

    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        raise DataError(f"{directory} has no tokenizer.json")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:
        raise DataError(f"{path}: cannot load tokenizer ({e})") from e


# ------------------------------------------------------------------------------------------ helpers
def _tokenizer_fingerprint(cfg: TokenizerConfig) -> Any:
    if cfg.kind != "pretrained":
        return None
    path = Path(str(cfg.path)).expanduser()
    files = [path] if path.is_file() else [p for p in (path / "tokenizer.json", path / "vocab.txt") if p.is_file()]
    return [sha256_file(p) for p in files] or str(cfg.path)


def _corpus_key(cfg: CorpusConfig) -> dict[str, Any]:
    """The corpus settings in a data dir's cache key. overflow=truncate, what every build did before the
    setting existed, is left out, so that those data dirs keep their names."""
    key = dataclasses.asdict(cfg)
    if key["overflow"] == "truncate":
        del key["overflow"]
    return key


def _describe(cfg: CorpusConfig) -> str:
    if cfg.source == "text":
        return f"files {[str(p) for p in corpus_mod.resolve_paths(cfg.paths)]}"
    if cfg.source == "hub":
        return f"dataset {cfg.dataset!r} ({cfg.config_name}, split {cfg.split})"
    return "the embedded pydocs corpus"


def _file_entry(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _remove_stale_tmp(data_dir: Path) -> None:
    """Delete leftovers of killed builds: tmp dirs made on this host by a process that is gone."""
    for tmp in data_dir.glob(".tmp-*"):
        parts = tmp.name.rsplit("-", 3)  # .tmp-<name>, host tag, pid, random
        if len(parts) != 4 or parts[1] != _HOST or not parts[2].isdigit():
            continue
        try:
            os.kill(int(parts[2]), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:  # alive, another user's
            continue


@contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

