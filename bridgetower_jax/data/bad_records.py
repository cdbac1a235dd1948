"""Bad input: a clear error naming the file and the record, or a counted, logged skip.

Every place that reads raw data reports problems through one `BadRecordLog`. Whether a reason is
skipped is the user's choice (`--skip_bad_records=all` or a comma list of reasons); otherwise the
first problem raises `BadRecordError`. Nothing is ever dropped without being counted.
"""
from __future__ import annotations

import collections
import json
from typing import Iterable

from absl import logging

# The kinds of bad input the readers detect (the names used by --skip_bad_records).
REASONS = (
    "missing_image",        # the image file a record points to does not exist
    "bad_image",            # truncated or undecodable image bytes
    "empty_text",           # empty caption / question / sentence
    "answer_not_in_vocab",  # a VQA question none of whose answers is in the answer vocabulary
    "bad_label",            # an NLVR2 / SNLI-VE label outside the known set, or a VQA .arrow
                            # answer score that is none of the soft scores (0.3, 0.6, 0.9, 1.0)
    "malformed_json",       # a JSON-lines row that does not parse
    "missing_field",        # a record lacking a field the format requires
    "image_skipped",        # a record whose image was skipped for one of the reasons above
)
_LOGGED_PER_REASON = 10


class BadRecordError(ValueError):
    """Raised for bad input when its reason is not being skipped."""


class BadRecordLog:
    """Counts skipped records per reason; raises for reasons that are not skipped."""

    def __init__(self, skip: bool | str | Iterable[str] = False):
        self.skip_reasons = parse_skip(skip)
        self.skipped: collections.Counter = collections.Counter()
        self.notes: collections.Counter = collections.Counter()

    def report(self, reason: str, file: str, record: str, detail: str) -> None:
        """Bad record: raise, or count and log it (the caller then drops the record)."""
        if reason not in REASONS:
            raise ValueError(f"unknown bad-record reason {reason!r}")
        message = f"{reason}: {detail} [file {file}, record {record}]"
        # A record dropped because its image was dropped follows the image's decision.
        if reason != "image_skipped" and reason not in self.skip_reasons:
            raise BadRecordError(
                f"{message}. Fix the input, or pass --skip_bad_records={reason} (or =all) to "
                "drop such records with a logged count.")
        self.skipped[reason] += 1
        if self.skipped[reason] <= _LOGGED_PER_REASON:
            logging.warning("skipping %s", message)
        elif self.skipped[reason] == _LOGGED_PER_REASON + 1:
            logging.warning("more %s records are being skipped; the summary has the count", reason)

    def note(self, what: str, count: int = 1) -> None:
        """Records dropped by the dataset's own protocol (e.g. duplicate captions), not errors."""
        self.notes[what] += count

    def summary(self) -> dict:
        return {"skipped": dict(self.skipped), "protocol_drops": dict(self.notes)}


def parse_skip(skip: bool | str | Iterable[str]) -> frozenset:
    if skip is True or skip == "all":
        return frozenset(REASONS)
    if not skip:
        return frozenset()
    reasons = frozenset(r.strip() for r in (skip.split(",") if isinstance(skip, str) else skip) if r.strip())
    unknown = reasons - set(REASONS)
    if unknown:
        raise ValueError(f"unknown --skip_bad_records reasons {sorted(unknown)}; known: {REASONS}")
    return reasons


def load_json(path: str):
    """Whole-file JSON; a malformed file is fatal (no record can be trusted) and says where."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise BadRecordError(f"missing input file {path}") from None
    except json.JSONDecodeError as e:
        raise BadRecordError(
            f"malformed JSON in {path} at line {e.lineno} column {e.colno}: {e.msg}") from None


def load_json_lines(path: str, log: BadRecordLog) -> list[tuple[int, dict]]:
    """JSON lines as (line number, row); a malformed row is a bad record of its own."""
    rows = []
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise BadRecordError(f"missing input file {path}") from None
    with f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                log.report("malformed_json", path, f"line {line_number}", f"{e.msg} at column {e.colno}")
                continue
            if not isinstance(row, dict):
                log.report("malformed_json", path, f"line {line_number}", "row is not a JSON object")
                continue
            rows.append((line_number, row))
    return rows


def wrong_format(path: str, expected: str) -> BadRecordError:
    return BadRecordError(f"{path} is not in the expected format: expected {expected}")


def require(row: dict, fields: Iterable[str], log: BadRecordLog, file: str, record: str) -> bool:
    missing = [f for f in fields if f not in row]
    if missing:
        log.report("missing_field", file, record, f"missing field(s) {missing}")
        return False
    return True
