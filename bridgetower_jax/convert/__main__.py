"""Command line: `python -m bridgetower_jax.convert {to-pytorch,from-pytorch,init-from-pretrained,from-original} ...`.

  to-pytorch   --params DIR --out HF_DIR --head {model,mlm,itm,itc}
               Flax params directory -> transformers directory (config.json + model.safetensors).
  from-pytorch --hf HF_DIR --out DIR
               transformers directory -> Flax params directory.
  init-from-pretrained --clip CLIP --roberta ROBERTA_DIR --config-preset base --head pretrain --out DIR
               fresh model with the vision tower from CLIP (transformers directory or OpenAI `visual.*`
               file) and the text tower from RoBERTa (transformers directory), as the paper starts.
  from-original --ckpt FILE.ckpt --config-preset base --image-size 384 [--head vqa] --out DIR
               original BridgeTower Lightning checkpoint -> Flax params directory (task heads included).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from bridgetower_jax import checkpoint
from bridgetower_jax.convert.original import from_original_checkpoint
from bridgetower_jax.convert.pretrained import init_from_pretrained
from bridgetower_jax.convert.pytorch import HF_CLASS_NAMES, detect_heads, from_pytorch, to_pytorch
from bridgetower_jax.convert.task_models import TASK_HEADS, TASKS
from bridgetower_jax.models.config import PRESETS, preset


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


def _config_from_args(args):
    config = preset(args.config_preset)
    if args.image_size is not None:
        config = config.replace(vision=dataclasses.replace(config.vision, image_size=args.image_size))
    return config.replace(vocab_pad_multiple=args.vocab_pad_multiple)


def _save_import(args, config, params, report) -> None:
    print(report.format())
    heads = TASK_HEADS[report.task]
    out = checkpoint.save_params(args.out, config, params, heads)
    print(f"wrote Flax params for task {report.task!r} (heads {list(heads) or ['model']}) to {out}")


def _init_from_pretrained(args) -> None:
    config, params, report = init_from_pretrained(
        _config_from_args(args), args.head, clip=args.clip, roberta=args.roberta, seed=args.seed,
        roberta_mlm_head=not args.fresh_mlm_head, strict=not args.allow_unmatched)
    _save_import(args, config, params, report)


def _from_original(args) -> None:
    task = None if args.head == "auto" else args.head
    config, params, report = from_original_checkpoint(args.ckpt, _config_from_args(args), task, seed=args.seed,
                                                      strict=not args.allow_unmatched)
    _save_import(args, config, params, report)


def _add_import_options(p) -> None:
    p.add_argument("--config-preset", default="base", choices=sorted(PRESETS),
                   help="model sizes (default base); the imported towers must match them")
    p.add_argument("--image-size", type=int, default=None,
                   help="image size to run at (default: the preset's); the position table is resized to it")
    p.add_argument("--vocab_pad_multiple", type=int, default=128,
                   help="pad the vocabulary to a multiple of this for sharding (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the freshly initialised parts")
    p.add_argument("--allow-unmatched", action="store_true",
                   help="ignore (and report) source keys that fit nowhere instead of failing")
    p.add_argument("--out", required=True, help="output params directory")


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
    p = sub.add_parser("init-from-pretrained", help="fresh model with CLIP and RoBERTa towers (the paper's start)")
    p.add_argument("--clip", help="transformers CLIP directory, or an OpenAI CLIP file (visual.* keys)")
    p.add_argument("--roberta", help="transformers RobertaModel / RobertaForMaskedLM directory")
    p.add_argument("--head", default="pretrain", choices=TASKS, help="which model to build (default pretrain)")
    p.add_argument("--fresh-mlm-head", action="store_true",
                   help="start the MLM head at random (as the original) instead of from RoBERTa's LM head")
    _add_import_options(p)
    p.set_defaults(run=_init_from_pretrained)
    p = sub.add_parser("from-original", help="original BridgeTower Lightning .ckpt -> Flax params directory")
    p.add_argument("--ckpt", required=True, help="the .ckpt file (torch.save of {'state_dict': ...})")
    p.add_argument("--head", default="auto", choices=("auto",) + TASKS,
                   help="model to build (default: the task whose heads the checkpoint holds)")
    _add_import_options(p)
    p.set_defaults(run=_from_original)
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
