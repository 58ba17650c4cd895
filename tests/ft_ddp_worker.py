"""Run by test_finetune_ddp.py under torchrun: one tiny fine-tuning job per rank; each rank then dumps the
tensors it trained so the test can compare ranks."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from safetensors.torch import save_file  # noqa: E402

from leantune.finetune.config import build_config  # noqa: E402
from leantune.recipes.finetune import finetune  # noqa: E402
from leantune.models import load_model  # noqa: E402

model_dir, train_file, out = sys.argv[1:4]
cfg = build_config(None, model=model_dir, train_file=train_file, text_columns=["text"], targets="qv",
                   method="lora", rank=2, dropout=0.1, lr=1e-2, max_steps=3, batch_size=4, max_length=16,
                   seed=0, quiet=True, out=out)
model = load_model(model_dir, head="seq-cls", num_labels=2, dtype="float32")
finetune(cfg, model=model)
rank = int(os.environ["RANK"])
trained = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
# beside the run's folder, not in it: rank 0 may still be renaming its staged result into place (atomic write)
save_file(trained, str(Path(out).parent / f"trained_rank{rank}.safetensors"))
