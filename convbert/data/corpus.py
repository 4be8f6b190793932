"""Corpus sources. Each yields documents; a document is a list of units (ELECTRA's "lines").

A unit is one stripped, non-empty line of text without newlines: a paragraph for pydocs, a line for
text files and hub rows. The example builder never lets an example cross a document boundary.
"""

from __future__ import annotations

import ast
import functools
import glob
import gzip
import inspect
import io
import os
import platform
import sys
import sysconfig
import warnings
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .config import CorpusConfig, DataError

Document = list[str]

# stdlib directories that hold test suites or third-party code rather than documentation
_PYDOCS_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


MAX_DOCUMENT_CHARS = 1 << 18  # longer runs of lines without a document end are cut into pieces of this size


def iter_documents(cfg: CorpusConfig) -> Iterator[Document]:
    """All documents of the corpus, in a fixed order, with the configured size limits applied."""
    if cfg.source == "pydocs":
        docs: Iterable[Document] = _pydocs_documents()
    elif cfg.source == "text":
        docs = _text_documents(cfg)
    else:
        docs = _hub_documents(cfg)
    return _limit(docs, cfg.max_documents, cfg.max_bytes)


def fingerprint(cfg: CorpusConfig) -> dict[str, Any]:
    """Cheap identity of the input beyond the config (part of the cache key): what the text depends on."""
    if cfg.source == "pydocs":
        return {"python": sys.version, "implementation": platform.python_implementation()}
    if cfg.source == "text":
        return {"files": [_stat(p) for p in resolve_paths(cfg.paths)]}
    local = [_stat(p) for p in _local_files([*_flatten(cfg.data_files), cfg.dataset])]
    return {"data_files": local} if local else {}


def _local_files(patterns: list[str]) -> list[Path]:
    """The local files behind hub-source paths (files, globs, directories); remote ones are skipped."""
    files: list[Path] = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        if glob.has_magic(pattern) or Path(pattern).exists():
            files += resolve_paths([pattern], must_match=False)
    return files


def estimated_bytes(cfg: CorpusConfig) -> int | None:
    """Expected bytes of text for the progress bar's ETA, when it can be known cheaply."""
    if cfg.source == "pydocs" and cfg.max_bytes is None and cfg.max_documents is None:
        total = sum(len(u.encode()) for doc in _pydocs_documents() for u in doc)  # parses are cached
    elif cfg.source == "text" and all(p.is_file() and p.suffix != ".gz" for p in resolve_paths(cfg.paths)):
        total = sum(p.stat().st_size for p in resolve_paths(cfg.paths))
    else:
        total = None
    if cfg.max_bytes is not None:
        total = min(total, cfg.max_bytes) if total is not None else cfg.max_bytes
    return total


def _limit(docs: Iterable[Document], max_documents: int | None, max_bytes: int | None) -> Iterator[Document]:
    n_docs = n_bytes = 0
    for doc in docs:
        if not doc:
            continue
        yield doc
        n_docs += 1
        n_bytes += sum(len(u.encode()) for u in doc) if max_bytes is not None else 0
        if (max_documents is not None and n_docs >= max_documents) or (max_bytes is not None and n_bytes >= max_bytes):
            return


def _paragraphs(text: str) -> Document:
    """Split on blank lines; the lines of one paragraph are joined into a single unit."""
    units, current = [], []
    for line in text.splitlines():
        line = line.strip()
        if line:
            current.append(line)
        elif current:
            units.append(" ".join(current))
            current = []
    if current:
        units.append(" ".join(current))
    return units


# ----------------------------------------------------------------------------------------- pydocs
def _pydocs_documents() -> Iterator[Document]:
    """pydoc's topic help texts, then one document per stdlib module (its docstrings in source order)."""
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield _paragraphs(topics[key])
    for path in _stdlib_files():
        yield _module_docstrings(path)


@functools.cache
def _stdlib_files() -> tuple[str, ...]:
    root = sysconfig.get_paths()["stdlib"]
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _PYDOCS_SKIP_DIRS and not d.startswith("."))
        files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
    return tuple(files)


@functools.cache
def _module_docstrings(path: str) -> Document:
    # parsed, never imported: importing the whole stdlib has side effects (antigravity opens a browser)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in old modules
            tree = ast.parse(Path(path).read_bytes())
    except (SyntaxError, ValueError, OSError):
        return []
    units: Document = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                units.extend(_paragraphs(inspect.cleandoc(doc)))
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef | ast.If | ast.Try):
                visit(child)

    visit(tree)
    return units


# ------------------------------------------------------------------------------------------- text
def resolve_paths(patterns: list[str], must_match: bool = True) -> list[Path]:
    """Expand files / directories / globs in order (each pattern sorted), without duplicates; hidden files
    and folders (.git/...) are left out of directories, as globs leave them out."""
    out: list[Path] = []
    seen: set[Path] = set()
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        if glob.has_magic(pattern):
            matches = [Path(p) for p in sorted(glob.glob(pattern, recursive=True)) if Path(p).is_file()]
        elif Path(pattern).is_dir():
            root = Path(pattern)
            matches = sorted(p for p in root.rglob("*") if p.is_file()
                             and not any(part.startswith(".") for part in p.relative_to(root).parts))
        elif Path(pattern).exists():  # a file, or a named pipe / device such as /dev/stdin
            matches = [Path(pattern)]
        else:
            raise DataError(f"corpus.paths: {pattern!r} does not exist")
        if not matches and must_match:
            raise DataError(f"corpus.paths: no file matches {pattern!r}")
        for p in matches:
            p = p.resolve() if p.is_file() else p  # /dev/stdin resolves to an unopenable /proc/.../pipe:[n]
            if p not in seen:
                seen.add(p)
                out.append(p)
    return out


def _text_documents(cfg: CorpusConfig) -> Iterator[Document]:
    for path in resolve_paths(cfg.paths):
        lines = _read_lines(path, cfg.encoding, cfg.on_decode_error)
        yield from _lines_to_documents(lines, blank_line_ends=cfg.doc_boundary == "blank_line")


def _lines_to_documents(lines: Iterable[str], blank_line_ends: bool) -> Iterator[Document]:
    """Non-blank lines grouped into documents, which blank lines end (when blank_line_ends). A document is
    also cut after MAX_DOCUMENT_CHARS, so that a file without blank lines is neither held in memory at once
    nor built by one worker; an example never spans the cut."""
    doc: Document = []
    size = 0
    for line in lines:
        if line:
            doc.append(line)
            size += len(line)
            if size >= MAX_DOCUMENT_CHARS:
                yield doc
                doc, size = [], 0
        elif blank_line_ends and doc:
            yield doc
            doc, size = [], 0
    if doc:
        yield doc


def _read_lines(path: Path, encoding: str, on_error: str) -> Iterator[str]:
    """Stripped lines (LF, CRLF or CR endings); undecodable bytes fail naming the file and line, or skip that
    line. Encodings that are not ASCII-compatible (UTF-16/32) are decoded as a stream, which cannot skip."""
    opener = gzip.open if path.suffix == ".gz" else open
    if "\n".encode(encoding) != b"\n":
        yield from _read_wide_lines(path, opener, encoding)
        return
    try:
        with opener(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode(encoding)
                except UnicodeDecodeError as e:
                    msg = (
                        f"{path} line {lineno}: cannot decode byte {raw[e.start : e.start + 1]!r} at column "
                        f"{e.start + 1} as {encoding}"
                    )
                    if on_error == "fail":
                        raise DataError(msg + " (set corpus.on_decode_error=skip to skip such lines)") from None
                    warnings.warn(msg + "; line skipped", stacklevel=2)
                    continue
                if lineno == 1:
                    line = line.lstrip("\ufeff")
                for part in line.rstrip("\r\n").split("\r"):  # old Mac files end lines with CR alone
                    yield part.strip()
    except (OSError, EOFError, zlib.error) as e:  # unreadable file, truncated or corrupt gzip
        raise DataError(f"{path}: cannot read ({e})") from e


def _read_wide_lines(path: Path, opener: Any, encoding: str) -> Iterator[str]:
    lineno = 0
    try:
        with opener(path, "rb") as raw, io.TextIOWrapper(raw, encoding=encoding) as f:
            # universal newlines; the BOM is consumed by the codec; lineno is read by the except clause below
            for lineno, line in enumerate(f, 1):  # noqa: B007
                yield line.strip()
    except UnicodeDecodeError as e:  # the codec decodes ahead in chunks: the exact line is not known
        raise DataError(f"{path}: cannot decode as {encoding} after line {lineno} ({e.reason})") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({e})") from e


def _stat(path: Path) -> list[Any]:
    st = path.stat()
    if not path.is_file():  # a pipe has no stable identity: never reuse its output
        return [str(path), "not-a-regular-file", os.urandom(8).hex()]
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _flatten(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | os.PathLike):
        return [str(value)]
    if isinstance(value, dict):
        return [p for v in value.values() for p in _flatten(v)]
    return [p for v in value for p in _flatten(v)]


# -------------------------------------------------------------------------------------------- hub
def _hub_documents(cfg: CorpusConfig) -> Iterator[Document]:
    import datasets  # heavy import, only for this source

    try:
        ds = datasets.load_dataset(
            cfg.dataset,
            cfg.config_name,
            split=cfg.split,
            revision=cfg.revision,
            data_files=cfg.data_files,
            streaming=cfg.streaming,
            cache_dir=cfg.cache_dir,
        )
    except Exception as e:  # network, missing dataset/config/split: say what was asked for
        raise DataError(
            f"datasets.load_dataset({cfg.dataset!r}, {cfg.config_name!r}, split={cfg.split!r}) failed: "
            f"{type(e).__name__}: {e}"
        ) from e
    columns = ds.column_names
    if columns is not None and cfg.text_column not in columns:
        raise DataError(f"corpus.text_column={cfg.text_column!r} is not a column of {cfg.dataset}: {columns}")
    texts = (text or "" for batch in ds.iter(batch_size=1000) for text in batch[cfg.text_column])
    if cfg.rows == "documents":  # one row = one document, its lines are units
        for text in texts:
            yield [u for u in (line.strip() for line in text.splitlines()) if u]
    else:  # one row = one line; blank rows separate documents
        yield from _lines_to_documents((" ".join(text.split("\n")).strip() for text in texts), blank_line_ends=True)


