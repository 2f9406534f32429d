"""Train examples/digits.cnn on scikit-learn's bundled 8x8 digits, compiled by cnnc.

    pip install -e '.[examples]'
    python examples/train_digits.py                  # the compiled module: cnnc's kernels
    python examples/train_digits.py --reference      # the same network in eager PyTorch

An ordinary PyTorch loop (DataLoader, SGD with momentum, a cosine schedule) around the
compiled module: cnnc generates its forward and backward kernels. 1437 images train, 360
are held out for the test. Afterwards the weights are saved as a state_dict, loaded into
`cnnc.reference` (plain torch.nn.functional), and both give the same test predictions.
No download: scikit-learn ships the data set.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch.utils.data import DataLoader, TensorDataset

import cnnc

NETWORK = Path(__file__).resolve().with_name("digits.cnn")


def digits(seed: int, limit: int | None = None) -> tuple[torch.Tensor, ...]:
    """Train and test images ([n, 1, 8, 8] in [0, 1]) and labels, split 80/20 per class."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        sys.exit("train_digits.py needs scikit-learn: pip install -e '.[examples]'")
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(data.target, dtype=torch.long)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, random_state=seed, stratify=labels)
    if limit is not None:
        x_train, y_train = x_train[:limit], y_train[:limit]
        x_test, y_test = x_test[:limit], y_test[:limit]
    return x_train, y_train, x_test, y_test


def build(reference: bool, device: str) -> torch.nn.Module:
    if reference:
        return cnnc.reference(NETWORK, "Digits").to(device)
    return cnnc.compile(NETWORK, "Digits", device=device)


@torch.no_grad()
def predict(net: torch.nn.Module, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Logits of the whole set in eval mode (running statistics in the batch norms)."""
    net.eval()
    return torch.cat([net(x[i:i + batch]) for i in range(0, len(x), batch)])


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=Path("digits.pt"),
                        help="where the trained state_dict goes (default: digits.pt)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reference", action="store_true",
                        help="train cnnc.reference (eager PyTorch) instead, for comparison")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first LIMIT train and test images (quick runs)")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 2:
        parser.error("--epochs must be at least 1 and --batch-size at least 2 "
                     "(batch norm needs two samples to train)")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Train, test, save, reload into the reference; returns what it printed, as numbers."""
    args = parse(argv)
    console = Console()
    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = (t.to(args.device) for t in digits(args.seed, args.limit))
    if len(x_train) < args.batch_size:
        sys.exit(f"train_digits.py: --batch-size {args.batch_size} is more than the "
                 f"{len(x_train)} training images")
    # drop_last: a last batch of one image would leave batch norm without a variance
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=args.batch_size,
                        shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(args.seed))
    net = build(args.reference, args.device)
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    kind = "cnnc.reference (eager PyTorch)" if args.reference else "cnnc.compile"
    console.print(f"Digits ({kind}, {args.device}): {len(x_train)} train, {len(x_test)} test "
                  f"images, {sum(p.numel() for p in net.parameters()):,} parameters")
    history = []
    start, cpu_start = time.perf_counter(), time.process_time()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.3f}  acc {task.fields[acc]:6.1%}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        for epoch in range(args.epochs):
            task = progress.add_task(f"epoch {epoch + 1}/{args.epochs}", total=len(loader),
                                     loss=0.0, acc=0.0)
            net.train()
            total, correct, seen = 0.0, 0, 0
            for x, y in loader:
                optimizer.zero_grad()
                logits = net(x)
                loss = torch.nn.functional.cross_entropy(logits, y)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(y)
                correct += (logits.argmax(1) == y).sum().item()
                seen += len(y)
                progress.update(task, advance=1, loss=total / seen, acc=correct / seen)
            scheduler.step()
            test_acc = (predict(net, x_test).argmax(1) == y_test).float().mean().item()
            history.append({"loss": total / seen, "train_accuracy": correct / seen,
                            "test_accuracy": test_acc})
            progress.update(task, description=f"epoch {epoch + 1}/{args.epochs}  "
                                              f"test {test_acc:6.1%}")
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    logits = predict(net, x_test)
    accuracy = (logits.argmax(1) == y_test).float().mean().item()
    console.print(f"test accuracy {accuracy:.1%} after {args.epochs} epochs, "
                  f"trained in {seconds:.1f} s ({cpu_seconds:.1f} s of CPU time)")

    torch.save(net.state_dict(), args.out)
    reloaded = cnnc.reference(NETWORK, "Digits").to(args.device)
    reloaded.load_state_dict(torch.load(args.out, weights_only=True))
    again = predict(reloaded, x_test)
    same = (again.argmax(1) == logits.argmax(1)).sum().item()
    gap = (again - logits).abs().max().item()
    console.print(f"saved {args.out}; cnnc.reference with these weights predicts the same "
                  f"class for {same}/{len(x_test)} test images (largest logit difference "
                  f"{gap:.2e})")
    return {"history": history, "test_accuracy": accuracy, "seconds": seconds,
            "cpu_seconds": cpu_seconds, "same_predictions": same, "test_images": len(x_test),
            "logit_gap": gap}


if __name__ == "__main__":
    main()
