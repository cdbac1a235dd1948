"""Command line: `python -m bridgetower_jax.convert {to-pytorch,from-pytorch} ...`.

  to-pytorch   --params DIR --out HF_DIR --head {model,mlm,itm,itc}
               Flax params directory -> transformers directory (config.json + model.safetensors).
  from-pytorch --hf HF_DIR --out DIR
               transformers directory -> Flax params directory.
"""
from __future__ import annotations

import argparse
import sys

from bridgetower_jax import checkpoint
from bridgetower_jax.convert.pytorch import HF_CLASS_NAMES, detect_heads, from_pytorch, to_pytorch


def _to_pytorch(args) -> None:
    config, params, heads = checkpoint.load_params(args.params)
    out = to_pytorch(config, params, args.out, head=args.head)
    print(f"wrote {HF_CLASS_NAMES[args.head]} to {out} (config.json, model.safetensors); "
          f"load it with transformers.{HF_CLASS_NAMES[args.head]}.from_pretrained({str(out)!r})")


def _from_pytorch(args) -> None:
    config, params = from_pytorch(args.hf, vocab_pad_multiple=args.vocab_pad_multiple)
    heads = detect_heads(params)
    out = checkpoint.save_params(args.out, config, params, heads)
    print(f"wrote Flax params with heads {list(heads) or ['model']} to {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bridgetower_jax.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("to-pytorch", help="Flax params directory -> transformers BridgeTower directory")
    p.add_argument("--params", "--workdir", dest="params", required=True,
                   help="params directory (config.json + params/), as written by from-pytorch or the importers")
    p.add_argument("--out", required=True, help="output directory for config.json + model.safetensors")
    p.add_argument("--head", default="model", choices=sorted(HF_CLASS_NAMES),
                   help="which transformers class to write (default: model)")
    p.set_defaults(run=_to_pytorch)
    p = sub.add_parser("from-pytorch", help="transformers BridgeTower directory -> Flax params directory")
    p.add_argument("--hf", required=True, help="directory written by save_pretrained")
    p.add_argument("--out", required=True, help="output params directory")
    p.add_argument("--vocab_pad_multiple", type=int, default=128,
                   help="pad the vocabulary to a multiple of this for sharding (default 128)")
    p.set_defaults(run=_from_pytorch)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
