"""Data-parallel training of a compiled network with torchrun and DistributedDataParallel.

    torchrun --nproc_per_node=8 examples/train_ddp.py --file examples/resnet.cnn \\
        --network ResNet18 --batch-size 64 --steps 100 --dtype bf16   # 8 GPUs, nccl
    torchrun --standalone --nproc_per_node=2 examples/train_ddp.py     # 2 CPU processes, gloo

Each process compiles the network for its own device and wraps the compiled module in
torch.nn.parallel.DistributedDataParallel unchanged: DDP all-reduces the gradients that
cnnc's backward kernels compute. The batches are random images with random labels (no
download), `--batch-size` per process; for a real data set, give the DataLoader a
torch.utils.data.distributed.DistributedSampler. Rank 0 prints the loss, averaged over
all processes, and at the end the images per second and saves the state_dict.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import cnnc
from cnnc.ir.shapes import concrete

EXAMPLES = Path(__file__).resolve().parent
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=EXAMPLES / "digits.cnn",
                        help="the .cnn file (default: examples/digits.cnn)")
    parser.add_argument("--network", default="Digits")
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--dtype", choices=DTYPES, default="fp32",
                        help="the dtype the network is compiled for (bf16: bf16 training)")
    parser.add_argument("--out", type=Path, default=None, help="rank 0 saves the state_dict")
    parser.add_argument("--reference", action="store_true",
                        help="wrap cnnc.reference (eager PyTorch) instead, for comparison")
    return parser.parse_args()


def main() -> None:
    args = parse()
    if "LOCAL_RANK" not in os.environ:
        raise SystemExit("train_ddp.py runs under torchrun: "
                         "torchrun --standalone --nproc_per_node=2 examples/train_ddp.py")
    local_rank = int(os.environ["LOCAL_RANK"])
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    dtype = DTYPES[args.dtype]

    graph = cnnc.load(args.file, args.network)
    (image,) = graph.input_nodes()  # one input: an image batch
    (classes,) = {shape[-1] for shape in graph.output_shapes(1)}
    torch.manual_seed(0)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
    if args.reference:
        net = cnnc.reference(args.file, args.network).to(device, dtype)
    else:
        net = cnnc.compile(args.file, args.network, device=device, dtype=dtype)
    model = DistributedDataParallel(net, device_ids=[local_rank] if cuda else None)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9,
                                weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.steps)
    generator = torch.Generator(device).manual_seed(1000 + rank)  # each rank its own batches
    if rank == 0:
        print(f"{args.network} from {args.file.name}, world size {world} "
              f"({dist.get_backend()}), {args.batch_size} images per process, {args.dtype}",
              flush=True)
    start = time.perf_counter()
    for step in range(args.steps):
        x = torch.randn(concrete(image.shape, args.batch_size), generator=generator,
                        device=device, dtype=dtype)
        y = torch.randint(0, classes, (args.batch_size,), generator=generator, device=device)
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()  # DDP all-reduces the gradients as the backward produces them
        optimizer.step()
        scheduler.step()
        if step == 0 or (step + 1) % 10 == 0 or step + 1 == args.steps:
            mean = loss.detach().clone()
            dist.all_reduce(mean)
            if rank == 0:
                print(f"step {step + 1}/{args.steps}  loss {mean.item() / world:.4f}",
                      flush=True)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if rank == 0:
        images = args.steps * args.batch_size * world
        print(f"{images} images in {seconds:.1f} s: {images / seconds:.1f} images/s", flush=True)
        if args.out is not None:
            torch.save(net.state_dict(), args.out)
    dist.barrier()  # no process tears its connections down while another still uses them
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
