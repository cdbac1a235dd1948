"""Build a dataset's ArrayRecord files from the files a researcher already has.

    python -m bridgetower_jax.data.build <dataset> --manual_dir DIR --data_dir OUT
        [--source auto|raw|arrow] [--skip_bad_records=all|reason,...]
        [--answer_vocab FILE] [--min_answer_count 9]        (vqav2 from JSON only)

datasets: coco_karpathy, f30k_karpathy, visual_genome, sbu, conceptual_captions, vqav2, nlvr2,
snli_ve. `--source auto` uses the ViLT/METER/BridgeTower .arrow files when `manual_dir` has them.
Bad input stops the build with the file and record named, unless its reason is skipped; skipped
records are counted in the summary printed at the end.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from bridgetower_jax.data import bad_records, builders


def build(dataset: str, manual_dir: str, data_dir: str, *, source: str = "auto",
          skip_bad_records=False, **reader_options) -> dict:
    start = time.perf_counter()
    corpus = builders.read_corpus(dataset, manual_dir, source=source, skip_bad_records=skip_bad_records,
                                  **reader_options)
    written = builders.write_corpus(dataset, corpus, data_dir)
    summary = {"dataset": dataset, "written": written, **corpus.plan.log.summary(),
               "seconds": round(time.perf_counter() - start, 1)}
    if corpus.plan.answer_vocabulary is not None:
        summary["answer_vocabulary_size"] = len(corpus.plan.answer_vocabulary)
    return summary


def format_summary(summary: dict) -> str:
    lines = [f"{summary['dataset']}: built in {summary['seconds']}s"]
    for config, splits in summary["written"].items():
        lines.append(f"  {config:>6}: " + ", ".join(f"{s} {n}" for s, n in splits.items()))
    if "answer_vocabulary_size" in summary:
        lines.append(f"  answer vocabulary: {summary['answer_vocabulary_size']}")
    skipped = summary["skipped"]
    lines.append("  skipped: " + (", ".join(f"{r} {n}" for r, n in skipped.items()) if skipped else "none"))
    for what, n in summary["protocol_drops"].items():
        lines.append(f"  dropped by protocol: {what} {n}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=sorted(builders.DATASETS))
    parser.add_argument("--manual_dir", required=True)
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--source", choices=("auto", "raw", "arrow"), default="auto")
    parser.add_argument("--skip_bad_records", default="",
                        help=f"'all' or comma list of {','.join(bad_records.REASONS)}")
    parser.add_argument("--answer_vocab", help="JSON list of answers (label order) to use instead of building one")
    parser.add_argument("--min_answer_count", type=int, default=9)
    parser.add_argument("--summary_json", help="also write the summary here")
    args = parser.parse_args(argv)
    options = {}
    if args.dataset == "vqav2" and args.source != "arrow":
        options["min_answer_count"] = args.min_answer_count
        if args.answer_vocab:
            with open(args.answer_vocab, encoding="utf-8") as f:
                options["answer_vocabulary"] = list(json.load(f))
    try:
        summary = build(args.dataset, args.manual_dir, args.data_dir, source=args.source,
                        skip_bad_records=args.skip_bad_records, **options)
    except bad_records.BadRecordError as e:
        sys.exit(f"error: {e}")
    print(format_summary(summary))
    if args.summary_json:
        with open(args.summary_json, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
