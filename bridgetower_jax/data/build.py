"""Build a dataset's ArrayRecord files from the files a researcher already has.

    python -m bridgetower_jax.data.build <dataset> --manual_dir DIR --data_dir OUT
        [--source auto|raw|arrow] [--skip_bad_records=all|reason,...] [--summary_json FILE]
        [--answer_vocab FILE]                   (vqav2, vgqa, vgqa_coco)
        [--min_answer_count 9]                  (vqav2 from JSON, without --answer_vocab)
        [--karpathy_json FILE]                  (vgqa, vgqa_coco from JSON; default in manual_dir)
        [--vgqa_heldout_images 5000]            (vgqa from JSON)

datasets: coco_karpathy, f30k_karpathy, visual_genome, sbu, conceptual_captions, vqav2, vgqa,
vgqa_coco, nlvr2, snli_ve. `--source auto` uses the ViLT/METER/BridgeTower .arrow files when
`manual_dir` has them. Bad input stops the build with the file and record named, unless its
reason is skipped; skipped records are counted in the summary printed at the end. A flag that
means nothing for the dataset and source is refused.

VQA labels: vqav2 builds its answer vocabulary from train+val annotations (or keeps the .arrow
files' own labels); `--answer_vocab` (a JSON list of answers, in label order) replaces it, and
with .arrow files the labels and scores are then recomputed from the files' answers. vgqa and
vgqa_coco label their answers in the vocabulary of the vqav2 already built in `--data_dir` (or
`--answer_vocab`), so that they share its label space and can be mixed into VQAv2 training.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from bridgetower_jax.data import bad_records, builders, sources
from bridgetower_jax.data.raw import vgqa

VGQA_DATASETS = ("vgqa", "vgqa_coco")   # labelled in the vocabulary of a built vqav2
# flag -> (reader option, datasets, sources) for the flags only some readers take.
READER_FLAGS = {
    "answer_vocab": ("answer_vocabulary", builders.VQA_DATASETS, ("raw", "arrow")),
    "min_answer_count": ("min_answer_count", ("vqav2",), ("raw",)),
    "karpathy_json": ("karpathy_json", VGQA_DATASETS, ("raw",)),
    "vgqa_heldout_images": ("heldout_images", ("vgqa",), ("raw",)),
}


def build(dataset: str, manual_dir: str, data_dir: str, *, source: str = "auto",
          skip_bad_records=False, **reader_options) -> dict:
    start = time.perf_counter()
    if dataset in VGQA_DATASETS and reader_options.get("answer_vocabulary") is None:
        reader_options["answer_vocabulary"] = built_answer_vocabulary(dataset, data_dir)
    corpus = builders.read_corpus(dataset, manual_dir, source=source, skip_bad_records=skip_bad_records,
                                  **reader_options)
    written = builders.write_corpus(dataset, corpus, data_dir)
    summary = {"dataset": dataset, "written": written, **corpus.plan.log.summary(),
               "seconds": round(time.perf_counter() - start, 1)}
    if corpus.plan.answer_vocabulary is not None:
        summary["answer_vocabulary_size"] = len(corpus.plan.answer_vocabulary)
    return summary


def built_answer_vocabulary(dataset: str, data_dir: str) -> list[str]:
    """The answer vocabulary of the vqav2 dataset built in `data_dir`."""
    try:
        return sources.answer_vocabulary(data_dir, "vqav2")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{dataset} labels its answers in the VQAv2 answer vocabulary, and {data_dir} has no built "
            "vqav2: build vqav2 into the same --data_dir first, or pass --answer_vocab FILE") from None


def load_answer_vocabulary(path: str) -> list[str]:
    vocabulary = bad_records.load_json(path)
    if not isinstance(vocabulary, list) or not all(isinstance(a, str) for a in vocabulary):
        raise bad_records.wrong_format(path, "a JSON list of answer strings, in label order")
    return vocabulary


def reader_options(args: argparse.Namespace, source: str) -> dict:
    """The reader options the flags ask for; ValueError for a flag that means nothing here."""
    options = {}
    for flag, (option, datasets, flag_sources) in READER_FLAGS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        if args.dataset not in datasets or source not in flag_sources:
            where = ", ".join(datasets) + ("" if len(flag_sources) > 1 else f" from {flag_sources[0]} files")
            raise ValueError(f"--{flag} means nothing for {args.dataset} from {source} files; it is for {where}")
        options[option] = load_answer_vocabulary(value) if flag == "answer_vocab" else value
    if "answer_vocabulary" in options and "min_answer_count" in options:
        raise ValueError("--min_answer_count builds an answer vocabulary; it means nothing with --answer_vocab")
    return options


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
    parser.add_argument("--answer_vocab", help="JSON list of answers (label order) to label the VQA answers with")
    parser.add_argument("--min_answer_count", type=int,
                        help="vqav2: keep answers given at least this often (default 9, as the original)")
    parser.add_argument("--karpathy_json", help="COCO Karpathy dataset_coco.json (default: in --manual_dir)")
    parser.add_argument("--vgqa_heldout_images", type=int,
                        help=f"VG images held out for each of val and test (default {vgqa.HELDOUT_IMAGES})")
    parser.add_argument("--summary_json", help="also write the summary here")
    args = parser.parse_args(argv)
    try:
        options = reader_options(args, builders.resolve_source(args.dataset, args.manual_dir, args.source))
    except ValueError as e:
        parser.error(str(e))
    try:
        summary = build(args.dataset, args.manual_dir, args.data_dir, source=args.source,
                        skip_bad_records=args.skip_bad_records, **options)
    except (bad_records.BadRecordError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(format_summary(summary))
    if args.summary_json:
        with open(args.summary_json, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
