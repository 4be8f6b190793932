"""Tokenize a corpus into pretraining shards: `python -m pipelines.prepare [overrides]` / `make data`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from convbert.data import prepare, read_manifest
from pipelines import run_hydra


@hydra.main(config_path="../conf", config_name="prepare", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out = prepare(
        corpus=OmegaConf.to_container(cfg.corpus, resolve=True),
        tokenizer=OmegaConf.to_container(cfg.tokenizer, resolve=True),
        max_seq_length=cfg.max_seq_length,
        seed=cfg.data_seed,
        heldout_fraction=cfg.heldout_fraction,
        num_workers=cfg.num_workers,
        data_dir=cfg.data_dir,
        progress=cfg.progress,
    )
    manifest = read_manifest(out)
    counts = manifest["counts"]
    held = (manifest.get("heldout") or {}).get("counts")
    kept = f" ({100 * counts['kept_fraction']:.1f}% of the corpus's)" if "kept_fraction" in counts else ""
    print(f"{out}: {counts['documents']} documents, {counts['examples']} examples, {counts['tokens']} tokens{kept}"
          + (f"; held out: {held['documents']} documents, {held['examples']} examples" if held else ""))


if __name__ == "__main__":
    run_hydra(main, "prepare")
