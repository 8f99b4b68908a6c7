#!/usr/bin/env python
"""Convert a BERT checkpoint folder into a DistilBERT-architecture folder (numpy only, no ML framework).

The conversion (key mapping, layer choice, checks) is :mod:`distilbert_mf.checkpoint.bert`; read its docstring for
the table of renames. This script is its command line.

Usage::

    python conversion/bert_to_distilbert.py SRC DST [--layers 0,2,4] [--overwrite]
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from distilbert_mf.checkpoint.bert import (  # noqa: F401  (the script's names, as before the move)
    ConversionError,
    bert_to_distilbert_config,
    check_layers,
    convert_bert,
    convert_state_dict,
    copy_tokenizer_files,
    default_layers,
    logger,
)


def parse_layers(text: str) -> list[int]:
    """``"0,2,4"`` -> ``[0, 2, 4]``."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"--layers takes comma-separated layer indices such as 0,2,4; got {text!r}"
        ) from err


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Convert a BERT checkpoint folder into a DistilBERT folder (exact when token_type_ids are 0).",
    )
    parser.add_argument("src", type=Path, help="BERT folder: config.json + weights (+ tokenizer files)")
    parser.add_argument("dst", type=Path, help="DistilBERT folder to write")
    parser.add_argument(
        "--layers",
        type=parse_layers,
        default=None,
        help="teacher layers to keep, e.g. 0,2,4,7,9,11 (default: all when <= 6, else every other: 0,2,4,...)",
    )
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty destination")
    parser.add_argument(
        "--allow-layer-norm-eps-mismatch",
        action="store_true",
        help="convert a BERT whose layer_norm_eps is not 1e-12 (not exact)",
    )
    parser.add_argument("--no-tokenizer", action="store_true", help="do not copy the tokenizer files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        convert_bert(
            args.src,
            args.dst,
            args.layers,
            overwrite=args.overwrite,
            allow_layer_norm_eps_mismatch=args.allow_layer_norm_eps_mismatch,
            copy_tokenizer=not args.no_tokenizer,
        )
    except (OSError, ValueError, TypeError) as err:
        logger.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
