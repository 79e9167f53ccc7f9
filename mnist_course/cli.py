"""The ``mnist-course`` command line.

Each sub-command is a thin wrapper: the work lives in the module named in its help text, and
heavy modules (torch, nbclient) are imported only when their sub-command runs.
Errors derived from :class:`mnist_course.CourseError` are printed as one clear message with
exit code 1 (or the error's own ``exit_code``: 2 when ``check`` is given a file it cannot
grade), never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from mnist_course import CourseError, __version__

__all__ = ["build_parser", "main"]


def _cmd_data(args: argparse.Namespace) -> int:
    from mnist_course import data

    ds = data.get_dataset(args.dataset)
    raw = data.fetch_mnist(args.root, rehash=True, dataset=ds.name)
    (x_train, _), (x_test, _) = data.load_mnist(args.root, download=False, dataset=ds.name)
    print(f"{ds.title} is ready in {raw}")
    for name in data.FILES:
        print(f"  {name}")
    print(f"train: {x_train.shape[0]:,} images {x_train.shape[1:]} {x_train.dtype}, "
          f"test: {x_test.shape[0]:,} images")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from mnist_course import data, training
    from mnist_course.history import format_epoch

    def on_epoch(row: dict) -> None:
        print(format_epoch(row, args.epochs), flush=True)

    result = training.run(
        args.impl,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        limit=args.limit,
        schedule=args.schedule,
        progress=not args.no_progress,
        on_epoch=on_epoch,
        save=args.save,
        nproc=args.nproc,
        dataset=args.dataset,
    )
    if result is None:           # a rank other than 0 under torchrun: rank 0 reports
        return 0
    if result["saved"]:
        how = ("numpy_cnn.load_params(path)" if args.impl == "numpy"
               else "torch.load(path, weights_only=True) or torch_cnn.load_state(path, model)")
        print(f"saved the final weights to {result['saved']} (read them with {how})")
    on = "" if args.dataset == "mnist" else f" on {data.get_dataset(args.dataset).title}"
    print(f"{args.impl}{on}: test accuracy {result['test_accuracy']:.4f} after {args.epochs} "
          f"epoch(s), {result['seconds_per_epoch']:.1f} s per epoch")
    if args.json:
        keys = ("impl", "dataset", "epochs", "test_accuracy", "train_seconds", "seconds_per_epoch", "params")
        if args.nproc is not None:
            keys += ("world_size",)
        print(json.dumps({k: result[k] for k in keys}))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from mnist_course import demo

    return demo.main(results=args.results, epochs=args.epochs, device=args.device)


def _cmd_bench(args: argparse.Namespace) -> int:
    for option, value in (("--steps", args.steps), ("--batch-size", args.batch_size)):
        if value < 1:
            print(f"mnist-course bench: error: {option} must be at least 1, got {value}",
                  file=sys.stderr)
            return 2
    from mnist_course import bench

    if args.nproc is not None:
        if args.nproc < 1:
            print(f"mnist-course bench: error: --nproc must be at least 1, got {args.nproc}",
                  file=sys.stderr)
            return 2
        result = bench.run_processes(args.nproc, batch_size=args.batch_size)
        print(json.dumps(result) if args.json else bench.format_processes(result))
        return 0
    result = bench.run(batch_size=args.batch_size, steps=args.steps)
    if args.json:
        print(json.dumps(result))
    else:
        print(bench.format_result(result))
    return 0


def _cmd_lessons(args: argparse.Namespace) -> int:
    from mnist_course import lessons

    return lessons.lessons_command(check=args.check, solutions=args.solutions,
                                   lessons=args.lessons)


def _cmd_check(args: argparse.Namespace) -> int:
    from mnist_course import scoreboard

    if args.timeout < 1:
        print(f"mnist-course check: error: --timeout must be at least 1, got {args.timeout}",
              file=sys.stderr)
        return 2
    return scoreboard.check_command(args.notebook, timeout=args.timeout)


def _cmd_draw(args: argparse.Namespace) -> int:
    if args.train_limit is not None and args.train_limit < 1:
        print(f"mnist-course draw: error: --train-limit must be at least 1, got {args.train_limit}",
              file=sys.stderr)
        return 2
    from mnist_course import draw

    return draw.main(host=args.host, port=args.port, open_browser=not args.no_browser,
                     weights=args.weights, train_limit=args.train_limit)


def _add_dataset(parser: argparse.ArgumentParser, text: str) -> None:
    from mnist_course.data import DATASETS  # light: numpy and the standard library only

    parser.add_argument("--dataset", default="mnist", choices=list(DATASETS), help=text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mnist-course",
        description="Helpers for the mnist-course lessons: data, training, demo, benchmarks, "
                    "lesson generation, grading and a drawing page.",
    )
    p.add_argument("--version", action="version", version=f"mnist-course {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("data", help="download (or find) and verify MNIST, print where it is")
    d.add_argument("--root", default=None,
                   help="data root (default: $MNIST_COURSE_DATA, else ~/.cache/mnist_course)")
    _add_dataset(d, "which dataset to fetch and verify: MNIST's handwritten digits (default), or "
                    "Zalando's Fashion-MNIST (clothes; local mirror: "
                    "$MNIST_COURSE_FASHION_MIRRORS), kept in <root>/FashionMNIST/raw")
    d.set_defaults(func=_cmd_data)

    t = sub.add_parser("train", help="train the course CNN in NumPy or PyTorch")
    t.add_argument("impl", choices=["numpy", "torch"])
    _add_dataset(t, "train on MNIST (default) or Fashion-MNIST, each normalised with its own "
                    "mean and std")
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="torch only: auto picks CUDA, then Apple MPS, when available")
    t.add_argument("--schedule", default="cosine", choices=["cosine", "constant"],
                   help="learning rate: cosine decay from --lr to 0 over the run (default), "
                        "or constant")
    t.add_argument("--limit", type=int, default=None, metavar="N",
                   help="train on the first N training images only (quick tries)")
    t.add_argument("--json", action="store_true",
                   help="end with one JSON line: impl, dataset, epochs, test_accuracy, "
                        "train_seconds, seconds_per_epoch, params")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    t.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="torch only: N processes through torch.distributed (gloo, CPU); "
                        "--batch-size is the global batch")
    t.add_argument("--save", default=None, metavar="PATH",
                   help="write the final weights there: .npz for numpy, a CourseCNN state_dict "
                        "(torch.save) for torch; a Fashion-MNIST network is recorded as such "
                        "(`draw` refuses it)")
    t.set_defaults(func=_cmd_train)

    m = sub.add_parser("demo", help="train NumPy then PyTorch and compare them")
    m.add_argument("--results", default="results", help="folder for learning_curves.png and the weights (numpy_cnn.npz, "
                        "torch_cnn.pt) that `draw` reads")
    m.add_argument("--epochs", type=int, default=3)
    m.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    m.set_defaults(func=_cmd_demo)

    b = sub.add_parser("bench", help="milliseconds per training step: NumPy composed and fused, "
                                     "PyTorch")
    b.add_argument("--json", action="store_true")
    b.add_argument("--batch-size", type=int, default=64)
    b.add_argument("--steps", type=int, default=20)
    b.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="instead: steps per second of data-parallel training with 1 and N "
                        "processes (torch.distributed, gloo)")
    b.set_defaults(func=_cmd_bench)

    le = sub.add_parser("lessons", help="regenerate lessons/ from solutions/")
    le.add_argument("--check", action="store_true",
                    help="change nothing; exit 1 if lessons/ differs from what would be generated")
    le.add_argument("--solutions", default="solutions", help=argparse.SUPPRESS)
    le.add_argument("--lessons", default="lessons", help=argparse.SUPPRESS)
    le.set_defaults(func=_cmd_lessons)

    c = sub.add_parser("check", help="grade a lesson notebook: one line per exercise and a "
                                     "score (exit 0 only when all pass)")
    c.add_argument("notebook")
    c.add_argument("--timeout", type=int, default=3600, metavar="SECONDS",
                   help="how long one cell may run before it is interrupted (default 3600)")
    c.set_defaults(func=_cmd_check)

    w = sub.add_parser("draw", help="a local web page where both networks read the digits you "
                                    "draw (needs the app extra)")
    w.add_argument("--port", type=int, default=8000, help="default 8000; 0 picks a free one")
    w.add_argument("--host", default="127.0.0.1",
                   help="default 127.0.0.1 (this machine only)")
    w.add_argument("--no-browser", action="store_true", help="do not open the page in a browser")
    w.add_argument("--weights", default="results", metavar="DIR",
                   help="folder with numpy_cnn.npz and/or torch_cnn.pt (default: results/, where "
                        "`make demo` saves them); without either, the PyTorch network is trained "
                        "for one epoch first and saved there")
    w.add_argument("--train-limit", type=int, default=None, help=argparse.SUPPRESS)
    w.set_defaults(func=_cmd_draw)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CourseError as exc:
        print(f"mnist-course: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except KeyboardInterrupt:
        print("mnist-course: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
