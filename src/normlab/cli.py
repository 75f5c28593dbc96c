"""The ``normlab`` command line."""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import sys

__all__ = ["main"]

#: what the evidence suite imports beyond the core (torch, numpy, ninja), by module -> package to install
SUITE_MODULES = {"sklearn": "scikit-learn", "scipy": "scipy", "mnist1d": "mnist1d", "requests": "requests",
                 "matplotlib": "matplotlib"}
#: how long ``--backend ray --address HOST:PORT`` waits for the cluster's port to answer
RAY_CONNECT_TIMEOUT_S = 10.0


def _installed(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None  # None: import blocked
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _needs_extra(cmd: str, modules: dict[str, str], extra: str, what: str) -> int:
    """0 when ``modules`` are importable, else one line naming the extra to install (exit code 2)."""
    missing = [pkg for mod, pkg in modules.items() if not _installed(mod)]
    if not missing:
        return 0
    return _fail(cmd, f"{what} needs packages that are not installed ({', '.join(missing)}): "
                      f"pip install 'normlab[{extra}]'")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _cmd_bench_gpu(args: argparse.Namespace) -> int:
    """``normlab bench --device cuda``: the GPU bench (normlab.bench_gpu), with the options both benches share."""
    from . import bench_gpu

    given = (("--cases", args.cases is not None), ("--dtypes", args.dtypes != "float32,bfloat16"),
             ("--fresh-pages", args.fresh_pages), ("--threads", args.threads is not None),
             ("--processes", args.processes != 1), ("--side-by-side", args.side_by_side))
    cpu_only = [flag for flag, yes in given if yes]
    if cpu_only:
        return _fail("bench", f"{', '.join(cpu_only)} apply to the CPU bench; with --device cuda give --quick, "
                              "--no-compile, --repeats, --json (every option: python -m normlab.bench_gpu --help)")
    argv = ["--ns", "4096", "65536", "--rounds", "1"] if args.quick else []
    argv += ["--no-compile"] if args.no_compile else []
    argv += ["--reps", str(args.repeats)] if args.repeats else []
    argv += ["--json", args.json] if args.json else []
    return bench_gpu.main(argv)


def _cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    if args.device == "cuda":
        return _cmd_bench_gpu(args)
    if args.json:
        parent = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
            print(f"normlab bench: cannot write --json {args.json}: {parent} is not a writable directory",
                  file=sys.stderr)
            return 2
    cases = None if args.cases is None else [c.strip() for c in args.cases.split(",") if c.strip()]
    if cases == []:
        return _fail("bench", f"--cases {args.cases!r} names no case; known: {', '.join(bench.case_names())}")
    log = None if args.silent else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
        result = bench.run_bench_processes(args.processes, threads=args.threads, log=log, quick=args.quick,
                                           compile=not args.no_compile, repeats=args.repeats, cases=cases,
                                           dtypes=dtypes, fresh_pages=args.fresh_pages,
                                           side_by_side=args.side_by_side)
    except ValueError as e:
        print(f"normlab bench: {e}", file=sys.stderr)
        return 2
    print(bench.format_table(result))
    if args.json:
        bench.save(result, args.json)
        print(f"\nwrote {args.json}")
    return 0


def _writable_dir(path: str) -> str | None:
    """None if ``path`` is (or can be made) a writable directory, else the reason."""
    if os.path.exists(path) and not os.path.isdir(path):
        return f"--out {path} is a file; expected a directory (records, plots and the report go inside it)"
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        return f"cannot create {path}: {e.strerror}"
    if not os.access(path, os.W_OK):
        return f"{path} is not writable"
    return None


def _context(args: argparse.Namespace) -> dict | None:
    """What every run's config gets: the text file, the device (when not the CPU: CPU records stay as they are)."""
    ctx = {}
    if getattr(args, "text", None):
        from .data import text

        text(args.text)  # validates: exists, UTF-8, long enough (raises with the reason)
        ctx["text"] = os.path.abspath(args.text)
    device = _device(getattr(args, "device", "cpu"))
    if device != "cpu":
        ctx["device"] = device
    return ctx or None


def _device(name: str) -> str:
    """--device: auto (CUDA when there is one), cpu, cuda."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
    return name


def _mode(args: argparse.Namespace) -> str:
    if args.quick and getattr(args, "mode", None) not in (None, "quick"):
        raise ValueError(f"--quick and --mode {args.mode} contradict each other: give one")
    return "quick" if args.quick else (getattr(args, "mode", None) or "full")


def _line(summary: dict, done: int, total: int) -> str:
    extra = "" if summary["status"] == "ok" else f"  {summary['error'].strip().splitlines()[-1]}"
    return (f"[{done}/{total}] {summary['claim']} {summary['name']} seed {summary['seed']}: "
            f"{summary['status']} ({summary['wall_time_s']:.1f} s){extra}")


class _Progress:
    """A rich progress bar over all runs on a terminal (each finished run printed above it); plain lines else."""

    def __init__(self):
        self.bar = None
        if sys.stderr.isatty() and _installed("rich"):
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("runs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TextColumn("{task.description}"), console=Console(stderr=True))
            self.task = None

    def __enter__(self):
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, summary: dict, done: int, total: int) -> None:
        if self.bar is None:
            print(_line(summary, done, total), file=sys.stderr, flush=True)
            return
        if self.task is None:
            self.task = self.bar.add_task("", total=total)
        self.bar.console.print(_line(summary, done, total))
        self.bar.update(self.task, completed=done, description=f"last: {summary['claim']} {summary['name']}")


def _experiments(args):
    from .experiments import parse_claims

    return parse_claims(args.claims if hasattr(args, "claims") else args.claim)


def _fail(cmd: str, message: str) -> int:
    print(f"normlab {cmd}: {message}", file=sys.stderr)
    return 2


def _readable_out(cmd: str, out: str) -> int:
    """0 if ``--out`` can hold records (a directory, or nothing yet), else the error's exit code."""
    if os.path.exists(out) and not os.path.isdir(out):
        return _fail(cmd, f"--out {out} is a file; expected the output directory of `normlab run`/`report`")
    return 0


def claims_document() -> str:
    """The claims the evidence suite tests, as shipped with the package (``normlab list --document``)."""
    from importlib.resources import files

    return files("normlab.experiments").joinpath("claims.md").read_text(encoding="utf-8")


def _cmd_list(args: argparse.Namespace) -> int:
    from .experiments import all_experiments
    from .experiments.suite import status_of

    if args.document:
        print(claims_document())
        return 0
    rc = _readable_out("list", args.out)
    if rc:
        return rc
    for claim, exp in all_experiments().items():
        print(f"{claim}  {exp.title}\n      records in {args.out}: {status_of(exp, args.out)}\n"
              f"      claim: {exp.statement}")
    return 0


def _ray_address_error(address: str | None) -> str | None:
    """Why ``--backend ray`` cannot start with this address (None when it can), found in seconds, not on retries.

    Ray itself is imported only by the runs; here only whether it is installed, whether Ray Client
    (``ray://``) has its gRPC package, and whether the cluster's port answers within
    :data:`RAY_CONNECT_TIMEOUT_S` are checked.
    """
    if not _installed("ray"):
        return "--backend ray needs Ray, which is not installed: pip install 'normlab[ray]'"
    addr = (address or os.environ.get("RAY_ADDRESS") or "").strip()
    source = "--address" if address else "RAY_ADDRESS"
    if not addr or addr in ("auto", "local"):
        return None
    client = addr.startswith("ray://")
    if client and not _installed("grpc"):
        return (f"{source} {addr} is a Ray Client address, which needs ray[client] (its gRPC package, grpcio, "
                f"is not installed): pip install 'normlab[ray]'")
    hostport = addr[len("ray://"):] if client else addr
    host, sep, port_text = hostport.rstrip("/").rpartition(":")
    if not sep:
        if not client:
            return None  # a name Ray resolves itself
        host, port_text = hostport.rstrip("/"), "10001"  # Ray Client's default port
    try:
        port = int(port_text)
    except ValueError:
        return f"{source} {addr}: expected ray://HOST:PORT or HOST:PORT, got the port {port_text!r}"
    try:
        socket.create_connection((host.strip("[]"), port), timeout=RAY_CONNECT_TIMEOUT_S).close()
    except OSError as e:
        reason = "no answer" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__).lower()
        return (f"cannot reach the Ray cluster at {addr} ({reason} within {RAY_CONNECT_TIMEOUT_S:g} s): check the "
                f"address and that the head node runs Ray" + (" with its client server on that port "
                                                                "(ray start --head; 10001 by default)" if client
                                                                else ""))
    return None


def _run_and_judge(args: argparse.Namespace, cmd: str):
    import time

    rc = _needs_extra(cmd, SUITE_MODULES, "suite", "the evidence suite")
    if rc:
        return rc, None
    from .experiments.suite import judge, run_missing

    try:
        exps = _experiments(args)
        context = _context(args)
    except (KeyError, ValueError, FileNotFoundError) as e:
        return _fail(cmd, str(e).strip("'\"")), None
    reason = _writable_dir(args.out)
    if reason:
        return _fail(cmd, reason), None
    try:
        mode = _mode(args)
    except ValueError as e:
        return _fail(cmd, str(e)), None
    if mode == "paper":
        from .experiments.estimate import format_estimate
        from .experiments.runner import plan_workers

        print(f"paper mode: sizes close to the papers'; estimated time of the runs still missing in {args.out}:\n"
              + format_estimate(exps, mode, args.out, plan_workers(args.workers, 1)[0]), file=sys.stderr, flush=True)
    if args.backend == "ray":
        reason = _ray_address_error(args.address)
        if reason:
            return _fail(cmd, reason), None
    start = time.perf_counter()
    try:
        with _Progress() as progress:
            summaries = run_missing(exps, mode, args.out, workers=args.workers, seeds=args.seeds, context=context, log=progress,
                        backend=args.backend, address=args.address)
    except RuntimeError as e:
        if "needs Ray" in str(e):
            return _fail(cmd, str(e)), None
        raise
    except ConnectionError as e:  # Ray Client gave up on the cluster after its own retries
        if args.backend != "ray":
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return _fail(cmd, f"cannot connect to the Ray cluster at {args.address or os.environ.get('RAY_ADDRESS')}: "
                          f"{first}"), None
    plots = os.path.join(args.out, "plots")
    results = [judge(e, mode, args.out, seeds=args.seeds, plots_dir=plots, context=context) for e in exps]
    failed = sum(1 for s in summaries or [] if s.get("status") != "ok")
    return 0, (results, mode, time.perf_counter() - start, failed)


def tally(results: list[dict], mode: str, failed_runs: int = 0) -> str:
    """One line: how many claims got each verdict, with the ids of those not supported or inconclusive."""
    by: dict[str, list[str]] = {}
    for r in results:
        by.setdefault(r["verdict"]["status"], []).append(r["claim"])
    parts = []
    for status in ("supported", "not supported", "inconclusive"):
        ids = by.pop(status, [])
        listed = f" ({', '.join(ids)})" if ids and status != "supported" else ""
        parts.append(f"{len(ids)} {status}{listed}")
    parts += [f"{len(ids)} {status} ({', '.join(ids)})" for status, ids in sorted(by.items())]
    line = f"{len(results)} claim{'s' if len(results) != 1 else ''} ({mode} mode): {', '.join(parts)}"
    if failed_runs:
        line += f"; {failed_runs} run{'s' if failed_runs != 1 else ''} failed (run the same command again to retry)"
    return line


def _print_results(results: list[dict], *, statement: bool = False) -> None:
    from .experiments.stats import Interval

    for r in results:
        v = r["verdict"]
        print(f"{r['claim']} [{v['status']}] {r['title']}")
        if statement:
            print(f"  claim: {r['statement']}")
        print(f"  {v['summary']}")
        for t in v.get("tests", []):
            print(f"  interval: {t['what']} = {Interval(**t).text()} -> {t.get('status') or '-'}")
        print(f"  rule: {v['rule']}")
        if v.get("versus_paper"):
            print(f"  paper vs here: {v['versus_paper']}")


def _cmd_run(args: argparse.Namespace) -> int:
    rc, payload = _run_and_judge(args, "run")
    if payload:
        _print_results(payload[0])
    return rc


def _cmd_report(args: argparse.Namespace) -> int:
    rc, payload = _run_and_judge(args, "report")
    if not payload:
        return rc
    from .report import render

    results, mode, took, failed = payload
    path = render(results, args.out, mode=mode, wall_time_s=took)
    if args.verbose:
        _print_results(results)
        print()
    flags = "".join(f" {f}" for f in _rerun_flags(args))
    print(tally(results, mode, failed))
    print(f"report: {path}  ({took / 60:.1f} min; each claim's verdict: normlab show CLAIM{flags}, or --verbose)")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    rc = _needs_extra("show", SUITE_MODULES, "suite", "the evidence suite")
    if rc:
        return rc
    from .experiments.suite import judge

    try:
        exps = _experiments(args)
        context = _context(args)
    except (KeyError, ValueError, FileNotFoundError) as e:
        return _fail("show", str(e).strip("'\""))
    rc = _readable_out("show", args.out)
    if rc:
        return rc
    try:
        mode = _mode(args)
    except ValueError as e:
        return _fail("show", str(e))
    results = [judge(e, mode, args.out, seeds=args.seeds, context=context) for e in exps]
    _print_results([r for r in results if r["runs_finished"]], statement=True)
    empty = [(e, r["claim"]) for e, r in zip(exps, results) if not r["runs_finished"]]
    if empty:
        flags = "".join(f" {f}" for f in _rerun_flags(args))
        for exp, claim in empty:
            others = [m for m in ("quick", "full") if m != mode
                      and judge(exp, m, args.out, seeds=args.seeds, context=context)["runs_finished"]]
            hint = ""
            if others:
                other = argparse.Namespace(**{**vars(args), "quick": others[0] == "quick",
                                              "mode": None if others[0] == "quick" else "full"})
                hint = (f" ({others[0]}-mode records are there: `normlab show {claim}"
                        f"{''.join(f' {f}' for f in _rerun_flags(other))}`)")
            print(f"normlab show: {claim}: no records yet in {args.out} ({mode} mode): "
                  f"run `normlab run {claim}{flags}` first{hint}", file=sys.stderr)
        return 1
    return 0


def _rerun_flags(args: argparse.Namespace) -> list[str]:
    """The options of this ``show`` that ``run`` needs to make the same records."""
    flags = ["--quick"] if args.quick else ([f"--mode {args.mode}"] if getattr(args, "mode", None) == "paper" else [])
    if args.out != "normlab-out":
        flags += ["--out", args.out]
    if args.seeds:
        flags += ["--seeds", str(args.seeds)]
    if args.text:
        flags += ["--text", args.text]
    if getattr(args, "device", "cpu") != "cpu":
        flags += ["--device", args.device]
    return flags


def _doctor_target(target: str):
    """Import ``MODULE:CALLABLE`` (a dotted module or a .py file) and return the object it names."""
    import importlib
    import importlib.util

    path, sep, attr = target.rpartition(":")
    if not sep or not path or not attr:
        raise ValueError(f"expected MODULE:CALLABLE (a module path or a .py file, then the function that builds the "
                         f"model), got {target!r}")
    added = os.path.dirname(os.path.abspath(path)) if path.endswith(".py") else os.getcwd()
    sys.path.insert(0, added)  # the target's own imports of its neighbours
    try:
        if path.endswith(".py") or os.path.isfile(path):
            if not os.path.isfile(path):
                raise ValueError(f"no such file: {path}")
            name = "_normlab_doctor_" + "".join(c if c.isalnum() else "_" for c in os.path.abspath(path))
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ValueError(f"cannot import {path} as a Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(path)
    finally:
        sys.path.remove(added)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{path} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _doctor_inputs(args: argparse.Namespace, model):
    """(inputs, kwargs, synthetic) from --input-shape / --inputs, or (None, None, False) if neither is given."""
    import torch

    if args.input_shape:
        try:
            shape = tuple(int(s) for s in args.input_shape.split(",") if s.strip())
        except ValueError:
            raise ValueError(f"--input-shape expects comma-separated positive integers such as 8,3,32,32, "
                             f"got {args.input_shape!r}") from None
        if not shape or any(s < 1 for s in shape):
            raise ValueError(f"--input-shape expects comma-separated positive integers such as 8,3,32,32, "
                             f"got {args.input_shape!r}")
        param = next((p for p in model.parameters() if p.is_floating_point()), None)
        dtype = param.dtype if param is not None else torch.float32
        device = param.device if param is not None else None
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
        return (x,), None, True
    if args.inputs:
        if not os.path.isfile(args.inputs):
            raise ValueError(f"--inputs {args.inputs}: no such file")
        try:
            data = torch.load(args.inputs, map_location="cpu")
        except Exception as e:
            raise ValueError(f"--inputs {args.inputs}: cannot load it with torch.load: {e}") from None
        if isinstance(data, torch.Tensor):
            return (data,), None, False
        if isinstance(data, (tuple, list)):
            return tuple(data), None, False
        if isinstance(data, dict):
            if set(data) <= {"args", "kwargs"}:
                return tuple(data.get("args", ())), dict(data.get("kwargs", {})), False
            return (), dict(data), False
        raise ValueError(f"--inputs {args.inputs} holds a {type(data).__name__}; expected a tensor, a tuple of "
                         "inputs, or a dict of keyword inputs ({'args': (...), 'kwargs': {...}} for both)")
    return None, None, False


def _is_index_dtype_error(e: Exception) -> bool:
    text = str(e)
    return "indices" in text and ("Long" in text or "Int" in text)


def _doctor_token_ids(model, given):
    """(random token ids of the --input-shape, vocabulary size) from the model's first nn.Embedding, or None."""
    import torch

    emb = next((m for m in model.modules() if isinstance(m, torch.nn.Embedding)), None)
    if emb is None or not given:
        return None
    vocab = emb.num_embeddings
    ids = torch.randint(0, vocab, tuple(given[0].shape), generator=torch.Generator().manual_seed(0))
    return ids.to(emb.weight.device), vocab


def _cmd_doctor(args: argparse.Namespace) -> int:
    import torch

    from .doctor import DoctorInputError, doctor

    if args.input_shape and args.inputs:
        return _fail("doctor", "give --input-shape or --inputs, not both")
    try:
        obj = _doctor_target(args.target)
    except Exception as e:  # the user's file: any error there is a bad argument to us
        return _fail("doctor", f"cannot import {args.target}: {type(e).__name__}: {e}")
    try:
        built = obj() if callable(obj) and not isinstance(obj, torch.nn.Module) else obj
    except Exception as e:
        return _fail("doctor", f"{args.target}() failed: {type(e).__name__}: {e}")
    inputs = kwargs = optimizer = None
    causal = args.causal
    if isinstance(built, dict):  # {"model": ..., "inputs": ..., "kwargs": ..., "optimizer": ..., "causal": ...}
        model = built.get("model")
        inputs, kwargs = built.get("inputs", built.get("example_inputs")), \
            built.get("kwargs", built.get("example_kwargs"))
        optimizer, causal = built.get("optimizer"), bool(built.get("causal", causal))
    elif isinstance(built, (tuple, list)) and built and isinstance(built[0], torch.nn.Module):
        model, inputs = built[0], built[1] if len(built) > 1 else None
        kwargs = built[2] if len(built) > 2 else None
    else:
        model = built
    if not isinstance(model, torch.nn.Module):
        return _fail("doctor", f"{args.target} gave a {type(model).__name__}; expected a torch.nn.Module (or a dict "
                               "with 'model', 'inputs', 'kwargs', 'optimizer')")
    try:
        given, given_kw, synthetic = _doctor_inputs(args, model)
    except ValueError as e:
        return _fail("doctor", str(e))
    if given is not None:
        inputs, kwargs = given, given_kw
    try:
        try:
            diagnosis = doctor(model, inputs, kwargs, optimizer=optimizer, train_step=args.train_step, causal=causal,
                               synthetic_inputs=synthetic)
        except DoctorInputError as e:
            ids = _doctor_token_ids(model, given) if synthetic and _is_index_dtype_error(e) else None
            if ids is None:
                raise
            print(f"normlab doctor: the model takes token ids: --input-shape {args.input_shape} made random ids "
                  f"in [0, {ids[1]}) from its first embedding (use --inputs for real data)", file=sys.stderr)
            diagnosis = doctor(model, (ids[0],), kwargs, optimizer=optimizer, train_step=args.train_step,
                               causal=causal, synthetic_inputs=synthetic)
    except DoctorInputError as e:
        where = "--input-shape / --inputs" if given is not None else "the inputs your builder returns"
        return _fail("doctor", f"{e} (check {where})")
    except Exception as e:  # noqa: BLE001 -- a doctor failure is not a finding: exit 3, not 1
        print(f"normlab doctor: the doctor itself failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 3
    if args.json:
        print(diagnosis.to_json())
    elif sys.stdout.isatty() and _installed("rich"):
        from rich.console import Console

        Console().print(diagnosis)
    else:
        print(diagnosis.render(color=False))
    if args.fix:
        return _doctor_fix(args, diagnosis, model, inputs, kwargs, optimizer, causal, synthetic)
    return 1 if diagnosis.errors else 0


def _doctor_fix(args: argparse.Namespace, diagnosis, model, inputs, kwargs, optimizer, causal, synthetic) -> int:
    """--fix PATH: apply the doctor's fixes, save the fixed model there, and exit by what is left."""
    import torch

    from .doctor import doctor

    applied = diagnosis.apply(model, optimizer)
    print(f"normlab doctor --fix: {applied}", file=sys.stderr)
    try:
        torch.save(model, args.fix)
    except Exception as e:  # noqa: BLE001 -- e.g. a model that cannot be pickled
        return _fail("doctor", f"--fix {args.fix}: cannot save the fixed model: {type(e).__name__}: {e}")
    after = doctor(model, inputs, kwargs, optimizer=optimizer, train_step=args.train_step, causal=causal,
                   synthetic_inputs=synthetic)
    print(f"normlab doctor --fix: saved the fixed model to {args.fix} (torch.save of the module; load it with "
          f"torch.load(path, weights_only=False)); after the fixes: {after.summary()}", file=sys.stderr)
    return 1 if after.errors else 0


def _kernel_libraries(where: str) -> list[str]:
    """The compiled kernel libraries under ``where``, newest first."""
    found = [os.path.join(d, f) for d, _, files in os.walk(where) for f in files if f.endswith(".so")]
    return sorted(found, key=os.path.getmtime, reverse=True)


def _cmd_kernels(args: argparse.Namespace) -> int:
    from ._cache import cache_dir

    where = os.path.join(cache_dir(), "kernels")
    if not args.build:
        libs = _kernel_libraries(where) if os.path.isdir(where) else []
        print(f"kernel cache: {where} (set NORMLAB_CACHE to move it)")
        print(f"{len(libs)} build{'s' if len(libs) != 1 else ''} there" + "".join(f"\n  {lib}" for lib in libs))
        print("`normlab kernels --build` builds (if needed) and loads the build for this machine and torch")
        return 0
    import warnings

    from . import kernels

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ok = kernels.cpp_available(build_now=True)
    if not ok:
        reasons = [str(w.message) for w in caught] or ["the build or the load failed"]
        print(f"normlab kernels: {reasons[0]}", file=sys.stderr)
        return 1
    libs = _kernel_libraries(where)
    print(f"normlab kernels: the C++ CPU kernels are built and load; cache: {libs[0] if libs else where}")
    return 0


def _add_suite_args(p: argparse.ArgumentParser, *, run: bool = True) -> None:
    p.add_argument("--quick", action="store_true", help="the quick mode: small models, few steps, fewer seeds "
                                                        "(each claim's own quick count; full mode: drop --quick)")
    p.add_argument("--out", default="normlab-out", help="output directory: records, plots, report "
                                                        "(default: normlab-out)")
    p.add_argument("--seeds", type=_positive_int, default=None, help="seeds per config (default: the mode's)")
    p.add_argument("--text", default=None, metavar="PATH", help="a UTF-8 text file to use instead of the "
                                                               "default corpus for the language-model claims")
    p.add_argument("--mode", choices=("quick", "full", "paper"), default=None,
                   help="quick, full (the default) or paper: sizes close to the papers', for a GPU or a cluster "
                        "(an estimated wall time per claim is printed first; not for a laptop)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"),
                   help="where the runs train (auto: CUDA when available); records say which device made them "
                        "and verdicts never mix devices (default: cpu)")
    if run:
        p.add_argument("--workers", type=_positive_int, default=None,
                       help="worker processes of the local backend (default: fill the cores)")
        p.add_argument("--backend", choices=("local", "ray"), default="local",
                       help="local: a process pool on this machine; ray: every run a Ray task on the cluster at "
                            "--address (pip install 'normlab[ray]')")
        p.add_argument("--address", default=None,
                       help="the Ray cluster to run on (default: $RAY_ADDRESS, else a local Ray)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="normlab", description="Normalization layers as one family, "
                                     "and the evidence for how they behave.")
    parser.add_argument("--version", action="version", version=f"normlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    from .bench import case_names as _case_names

    case_names = _case_names()
    b = sub.add_parser("bench", help="time normlab's layers against torch.nn, torch.compile and a memory copy",
                       description="Time normlab's layers against torch.nn's, torch.compile and x.clone() "
                                   "(the bandwidth limit) on CPU; print a table of medians and ratios.")
    b.add_argument("--quick", action="store_true", help="small shapes and few repeats (seconds, for smoke tests)")
    b.add_argument("--no-compile", action="store_true", help="skip the torch.compile anchor (saves ~30 s)")
    b.add_argument("--repeats", type=_positive_int, default=None, help="timed runs per measurement")
    b.add_argument("--cases", default=None, metavar="NAMES",
                   help=f"comma-separated case names, from: {', '.join(case_names)} (default: all)")
    b.add_argument("--dtypes", default="float32,bfloat16", metavar="NAMES",
                   help="comma-separated input dtypes, from: float32, bfloat16 (default: both)")
    b.add_argument("--fresh-pages", action="store_true",
                   help="leave the allocator as it is: large outputs then pay fresh page faults on every call")
    b.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads (default: torch's)")
    b.add_argument("--processes", type=_positive_int, default=1,
                   help="run the bench in this many fresh processes and report medians over them, with the "
                        "range of the ratios (a process's memory layout can shift one variant by 10-20%%)")
    b.add_argument("--side-by-side", action="store_true",
                   help="time torch's layer and normlab's alone, interleaved in this one process, the allocator "
                        "as it is (the way a user times them)")
    b.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    b.add_argument("--silent", action="store_true", help="no progress lines on stderr")
    b.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: the GPU bench of the triton kernels (bandwidth against torch, torch.compile, "
                        "Liger-Kernel and x.clone(); see docs/gpu.md)")
    b.set_defaults(func=_cmd_bench)

    lst = sub.add_parser("list", help="the claims and how many of their runs have records",
                         description="Each claim's id, title and statement, and how many of its runs have "
                                     "records (quick and full mode) in --out.")
    lst.add_argument("--out", default="normlab-out", help="the output directory whose records are counted "
                                                          "(default: normlab-out)")
    lst.add_argument("--document", action="store_true", help="print the claims document shipped with normlab "
                                                             "(every claim in full, with its sources) instead")
    lst.set_defaults(func=_cmd_list)
    run = sub.add_parser("run", help="run one claim's experiment (what is missing) and print its verdict",
                         description="Run the runs of one claim (or several) that have no record in --out yet, "
                                     "then judge the claim from all its records and print the verdict with the "
                                     "intervals it was judged on. Finished runs are never redone.")
    run.add_argument("claim", help="a claim id such as C21 (or several: C21,C22)")
    _add_suite_args(run)
    run.set_defaults(func=_cmd_run)
    rep = sub.add_parser("report", help="run what is missing, then write the HTML report",
                         description="Run every claim's runs that have no record in --out yet (all claims, or "
                                     "--claims), judge each claim from its records, write the HTML report "
                                     "(--out/index.html) and print a one-line tally of the verdicts. Interrupted "
                                     "or repeated, it resumes: finished runs are never redone.")
    rep.add_argument("--verbose", action="store_true",
                     help="also print each claim's verdict, intervals and rule (as normlab show does)")
    rep.add_argument("--claims", default=None, help="comma-separated claim ids, e.g. C18,C22 (default: all; "
                                                    "an empty list is an error)")
    _add_suite_args(rep)
    rep.set_defaults(func=_cmd_report)
    show = sub.add_parser("show", help="print a claim's verdict from the records already there",
                          description="Judge one claim (or several) from the records already in --out, without "
                                      "running anything, and print the verdict, the intervals and the rule. "
                                      "Give the mode the records were made in (--quick for quick-mode records).")
    show.add_argument("claim", help="a claim id such as C22 (or several: C21,C22); exits 1 when one has "
                                    "no records yet")
    _add_suite_args(show, run=False)
    show.set_defaults(func=_cmd_show)
    doc = sub.add_parser("doctor", help="find the normalization bugs in your own model",
                         description="Build a model by calling MODULE:CALLABLE (a module path or a .py file; the "
                                     "callable returns the model, or a dict with 'model', 'inputs', 'kwargs', "
                                     "'optimizer'), run normlab's checks on it and print the findings. Exits 1 if any "
                                     "is an error, 0 otherwise, 2 on bad arguments or inputs the model cannot "
                                     "run, 3 if the doctor itself fails.")
    doc.add_argument("target", metavar="MODULE:CALLABLE", help="e.g. mypkg.models:build or path/to/model.py:make")
    doc.add_argument("--input-shape", default=None, metavar="SHAPE",
                     help="a random example input of this shape, e.g. 8,3,32,32 (checks that compare with the "
                          "data's statistics stay silent on random inputs)")
    doc.add_argument("--inputs", default=None, metavar="FILE.pt",
                     help="example inputs saved with torch.save: a tensor, a tuple of inputs, or a dict of keyword "
                          "inputs")
    doc.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    doc.add_argument("--train-step", action="store_true", help="also run one forward + backward (on a copy)")
    doc.add_argument("--fix", default=None, metavar="PATH",
                     help="apply the fixes the doctor can make (momentum convention, eps, a bias the next norm "
                          "removes, weight decay on norm parameters, frozen BatchNorm) to the model and save it "
                          "to PATH with torch.save; without --fix nothing is written")
    doc.add_argument("--causal", action="store_true",
                     help="the model is a causal sequence model (dim 1 of the input is time): check for norms that "
                          "leak the future")
    doc.set_defaults(func=_cmd_doctor)
    ker = sub.add_parser("kernels", help="where the compiled C++ kernels are cached; --build prebuilds them",
                         description="normlab's fused C++ CPU kernels are compiled once per machine on first use "
                                     "(20-60 s) and cached (under $NORMLAB_CACHE, else ~/.cache/normlab). "
                                     "Without options: print the cache and the builds in it. With --build: build "
                                     "them now (for a container image or a CI cache) and load them; exit 1 with "
                                     "the reason if they cannot be built.")
    ker.add_argument("--build", action="store_true", help="build (if needed) and load the kernels for this machine "
                                                          "and torch, then print where the build is")
    ker.set_defaults(func=_cmd_kernels)
    return parser


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse; an unknown option is reported with the usage of the subcommand it was given to."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        subs.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        rc = args.func(args)
        sys.stdout.flush()  # inside the try: a reader that went away (| head) is handled below
        return rc
    except BrokenPipeError:  # `normlab list | head -1`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's last flush does not fail again
        os.close(devnull)
        return 141  # the shell's code for a process ended by SIGPIPE
    except KeyboardInterrupt as e:  # one line, no traceback, the shell's code for SIGINT
        runner = sys.modules.get("normlab.experiments.runner")  # no import while interrupted
        if runner is None or not isinstance(e, runner.Interrupted):  # else the runner said it already
            print(f"normlab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
