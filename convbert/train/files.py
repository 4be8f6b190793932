"""Old home of the atomic-write helpers; they live in `convbert.io` now. Kept as re-exports so existing
imports (`from convbert.train.files import write_json_atomic`) keep working."""

from convbert.io import atomic_path, json_clean, write_bytes_atomic, write_json_atomic, write_text_atomic

__all__ = ["atomic_path", "json_clean", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]
