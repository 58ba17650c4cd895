"""Run by test_fsdp_cpu.py under torchrun (2 CPU processes, gloo): a tiny model with leantune's trainable parts
wrapped in torch FSDP (full shard, use_orig_params: what accelerate's FSDP config does), a few steps with
leantune's optimizer groups; each rank then writes its Q/K/V matrices (gathered) for the test to compare."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP  # noqa: E402
from torch.distributed.fsdp import ShardingStrategy  # noqa: E402

from leantune.arch import get_arch  # noqa: E402
from leantune.finetune.adapters import attach  # noqa: E402
from leantune.finetune.config import FinetuneConfig  # noqa: E402
from leantune.finetune.groups import param_groups  # noqa: E402
from tiny import tiny_input, tiny_model  # noqa: E402

out = sys.argv[1]
dist.init_process_group("gloo")
rank = dist.get_rank()


def run(family: str, method: str) -> None:
    model = tiny_model(family, head="seq-cls")
    model.config.pad_token_id = 0
    arch = get_arch(model)
    before = {f"{layer}.{n}": arch.matrix(layer, n).read() for layer in range(arch.num_layers) for n in "qkv"}
    cfg = FinetuneConfig(targets="qv", method=method, rank=2, alpha=4, dropout=0.0, lr=1e-2, v_lr_ratio=4,
                         weight_decay=0.1)
    ad = attach(model, "qv", method, cfg.rank, cfg.alpha, cfg.dropout)
    params_before = {id(p) for p in model.parameters()}
    wrapped = FSDP(model, use_orig_params=True, device_id=torch.device("cpu"),
                   sharding_strategy=ShardingStrategy.FULL_SHARD)
    assert {id(p) for p in wrapped.parameters()} <= params_before  # the groups built before wrapping stay valid
    opt = torch.optim.AdamW(param_groups(ad, cfg))
    wrapped.train()
    g = torch.Generator().manual_seed(rank)  # each rank its own data, as data parallelism does
    for _ in range(3):
        x = tiny_input(seed=int(torch.randint(0, 1000, (1,), generator=g)), batch=4, length=6)
        y = torch.randint(0, 2, (4,), generator=g)
        wrapped(input_ids=x, labels=y).loss.backward()
        opt.step()
        opt.zero_grad()
    with FSDP.summon_full_params(wrapped):  # the whole (unsharded) weights, as a checkpoint would see them
        ad.merge()
        arch = get_arch(model)
        after = {f"{layer}.{n}": arch.matrix(layer, n).read() for layer in range(arch.num_layers) for n in "qkv"}
    save_file({**{f"before.{k}": v.contiguous() for k, v in before.items()},
               **{f"after.{k}": v.contiguous() for k, v in after.items()}},
              str(Path(out) / f"{family}-{method}-rank{rank}.safetensors"))


for case in sys.argv[2:]:  # family:method
    run(*case.split(":"))
dist.destroy_process_group()
