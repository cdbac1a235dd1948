"""Tokenizer: load RoBERTa's fast tokenizer from a local directory, or train a small one.

Production runs point `load_tokenizer` at a directory holding the real RoBERTa `vocab.json`
and `merges.txt`; nothing is ever fetched from the hub. Tests and the demo train a small
byte-level BPE with RoBERTa's special-token layout (`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3,
`<mask>`=4) so that every id convention the model and the MLM masking rely on holds.

CLI:
    python -m bridgetower_jax.data.tokenizer --corpus FILE[,FILE] --out DIR --vocab_size N
"""
from __future__ import annotations

import argparse
import os
from typing import Iterable, Iterator, Sequence

# RoBERTa's fairseq dictionary puts these five first, in this order.
ROBERTA_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


def load_tokenizer(local_dir: str, max_length: int = 512):
    """Returns `RobertaTokenizerFast` read from `local_dir` only (never the hub)."""
    from transformers import RobertaTokenizerFast

    if not os.path.isdir(local_dir):
        raise FileNotFoundError(
            f"tokenizer directory {local_dir!r} does not exist; pass a local directory with "
            "vocab.json and merges.txt (hub ids are not accepted: no network at run time)")
    return RobertaTokenizerFast.from_pretrained(
        local_dir, local_files_only=True, model_max_length=max_length)


def _corpus_lines(paths: Sequence[str]) -> Iterator[str]:
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    yield line


def train_bpe_tokenizer(lines: Iterable[str], out_dir: str, vocab_size: int,
                        min_frequency: int = 1) -> str:
    """Trains a byte-level BPE with RoBERTa's special layout and saves a loadable directory."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    # Special tokens listed first get ids 0..4, exactly RoBERTa's layout.
    bpe.train_from_iterator(lines, vocab_size=vocab_size, min_frequency=min_frequency,
                            special_tokens=list(ROBERTA_SPECIAL_TOKENS), show_progress=False)
    os.makedirs(out_dir, exist_ok=True)
    bpe.save_model(out_dir)
    tokenizer = load_tokenizer(out_dir)
    tokenizer.save_pretrained(out_dir)  # adds tokenizer.json + special-token config
    _check_special_layout(tokenizer)
    return out_dir


def _check_special_layout(tokenizer) -> None:
    ids = tokenizer.convert_tokens_to_ids(list(ROBERTA_SPECIAL_TOKENS))
    if ids != list(range(len(ROBERTA_SPECIAL_TOKENS))):
        raise AssertionError(f"special tokens got ids {ids}, expected 0..4 (RoBERTa layout)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, help="comma-separated text files, one sentence a line")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--vocab_size", type=int, default=1000)
    parser.add_argument("--min_frequency", type=int, default=1)
    args = parser.parse_args(argv)
    paths = [p for p in args.corpus.split(",") if p]
    train_bpe_tokenizer(_corpus_lines(paths), args.out, args.vocab_size, args.min_frequency)
    tokenizer = load_tokenizer(args.out)
    print(f"wrote {args.out}: vocabulary {len(tokenizer)} tokens, specials "
          f"{dict(zip(ROBERTA_SPECIAL_TOKENS, range(5)))}")


if __name__ == "__main__":
    main()
