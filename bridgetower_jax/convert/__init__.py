"""Weight conversion: transformers BridgeTower both ways; CLIP / RoBERTa towers and original .ckpt in."""
from bridgetower_jax.convert.clip import import_clip_vision
from bridgetower_jax.convert.hf_config import from_hf_config, to_hf_config
from bridgetower_jax.convert.import_report import ImportReport
from bridgetower_jax.convert.original import from_original_checkpoint
from bridgetower_jax.convert.position_resize import resize_position_table
from bridgetower_jax.convert.pretrained import init_from_pretrained
from bridgetower_jax.convert.pytorch import HF_CLASS_NAMES, detect_heads, flax_model_for, from_pytorch, to_pytorch
from bridgetower_jax.convert.roberta import import_roberta
from bridgetower_jax.convert.task_models import TASK_HEADS, TASKS, task_model_for

__all__ = ["from_pytorch", "to_pytorch", "from_hf_config", "to_hf_config", "detect_heads", "flax_model_for",
           "HF_CLASS_NAMES", "init_from_pretrained", "from_original_checkpoint", "import_clip_vision",
           "import_roberta", "resize_position_table", "ImportReport", "TASKS", "TASK_HEADS", "task_model_for"]
