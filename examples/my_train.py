"""Data-parallel training with SyncBatchNorm, launched by torchrun (CPU: gloo; CUDA: nccl).

    torchrun --nproc_per_node 2 examples/my_train.py [--steps 100] [--batch 32] [--record run.json]
    python examples/my_train.py                      # one process: the same training, alone

Every process builds the same ConvNet (BatchNorm after each conv) from the same seed and trains on
its contiguous shard of each global batch of scikit-learn's 8x8 digits (``normlab[suite]``).
``TrainConfig(sync_batchnorm=True)`` converts the BatchNorms to ``nl.SyncBatchNorm``, whose
statistics pool the whole global batch across processes (so two processes compute what one process
on the global batch would: the loss curves agree to float rounding); ``normlab.train.train`` wraps the model in DistributedDataParallel,
averages the logged loss over the processes and writes the record from rank 0 only.
"""

from __future__ import annotations

import argparse

import torch
import torch.distributed as dist

from normlab.data import digits
from normlab.models import ConvNet, ConvNetConfig
from normlab.train import ClassificationTask, TrainConfig, init_distributed, train


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps (default: 100)")
    parser.add_argument("--batch", type=int, default=32, help="global batch, split over the processes (default: 32)")
    parser.add_argument("--record", default=None, help="write the run record (JSON) here, from rank 0")
    args = parser.parse_args(argv)

    rank, world = init_distributed()  # joins torchrun's group; (0, 1) when started without torchrun
    torch.manual_seed(0)  # the same initial weights in every process (and in a one-process run)
    model = ConvNet(ConvNetConfig(dim=2, in_channels=1, input_size=8, widths=(16, 32), norm="batchnorm"))
    task = ClassificationTask(digits(), batch_size=args.batch)
    cfg = TrainConfig(steps=args.steps, lr=3e-3, warmup_steps=min(10, args.steps), sync_batchnorm=True, log_every=2,
                      progress=False)
    record = train(model, task, cfg, record_path=args.record)
    if rank == 0:
        losses = [m["loss"] for m in record["metrics"]]
        print(f"{world} process(es), per-process batch {args.batch // world}, SyncBatchNorm: "
              f"{record['status']}; loss {losses[0]:.4f} -> {losses[-1]:.4f}; "
              f"test accuracy {record['final']['test_acc']:.3f}")
    if dist.is_initialized():
        dist.destroy_process_group()
    return record


if __name__ == "__main__":
    main()
