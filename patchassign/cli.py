"""The ``patchassign`` command.

Every failure a user can cause (bad file, bad JSON, bad option) ends with a one-line
message on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgspec

from ._json import why_not_json
from .bulk import (
    InvalidPlan,
    Options,
    PreflightFailed,
    Validation,
    render_check,
    run_plan,
    unusable_error,
    validate_plan,
)
from .config import Config, load_config
from .diff import make_patch
from .dispatch import Dispatcher, Limits
from .errors import ConfigError, LimitExceeded, PatchassignError, PatchError, PlanError
from .journal import JournalError, JournalLike, is_url, open_journal
from .merge import apply_merge_patch, make_merge_patch
from .patch import JsonPatch, apply_patch
from .plan import _head_text
from .report import LEFTOVER_STATUSES, counted, render_status, write_leftovers, write_undo
from .systems._base import plain

if TYPE_CHECKING:
    from .changes import Change

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A problem with the command line or its input files (exit status 2)."""


def _journal_argument(parser: argparse.ArgumentParser) -> None:
    """The journal, positional or as ``--journal`` (the flag ``run`` takes)."""
    parser.add_argument(
        "journal", nargs="?", help="the run's journal (a file or a postgresql:// URL)"
    )
    parser.add_argument(
        "--journal", dest="journal_flag", metavar="FILE|URL", help="the same, as run takes it"
    )
    parser.set_defaults(journal_parser=parser)


def _journal_given(args: argparse.Namespace) -> None:
    parser: argparse.ArgumentParser = args.__dict__.pop("journal_parser")
    flag = args.__dict__.pop("journal_flag", None)
    if flag is not None:
        if args.journal is not None and args.journal != flag:
            parser.error(f"two journals given: {args.journal} and --journal {flag}")
        args.journal = flag
    if args.journal is None:
        parser.error("the journal is required (a file or a postgresql:// URL)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patchassign",
        description="Change who is assigned to what in other systems, at volume.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sb = sub.add_parser(
        "sandbox",
        help="run the fake servers on 127.0.0.1 until interrupted",
        description="Start the fake PERSCOM, Maxsight, Kintone, SuperOffice and Findable "
        "servers, and Helpdesk (an in-house system for the generic REST adapter), on free "
        "loopback ports, print their URLs and throwaway tokens, and serve "
        "until Ctrl-C.",
    )
    sb.add_argument(
        "--demo", type=int, default=100, metavar="N", help="demo records per system (default 100)"
    )
    sb.add_argument("--records", metavar="FILE", help='JSON file {"<system>": [records]} to seed')
    sb.add_argument(
        "--faults",
        metavar="JSON",
        help='fault settings for every server, e.g. \'{"throttle": 0.05, "drop": 0.01}\', '
        'or per system: \'{"kintone": {"latency": 0.05}}\'',
    )
    sb.add_argument("--systems", metavar="LIST", help="comma-separated subset of systems")
    sb.add_argument("--json", action="store_true", help="print the URLs and tokens as JSON")
    sb.add_argument(
        "--write-config",
        type=Path,
        metavar="FILE",
        help="write a systems.toml for these servers, and print the token variables to export",
    )
    sb.set_defaults(func=lambda args: _arun(_sandbox(args)))
    _run_parsers(sub)
    _demo_parser(sub)
    _core_parsers(sub)
    return parser


async def _sandbox(args: argparse.Namespace) -> int:
    from .sandbox import SYSTEMS, Sandbox

    try:
        faults = json.loads(args.faults) if args.faults else None
    except json.JSONDecodeError as e:
        raise UsageError(f"--faults is not JSON: {e}") from None
    systems = args.systems.split(",") if args.systems else SYSTEMS
    if args.demo < 0:
        raise UsageError("--demo must be 0 or more")
    try:
        kwargs = {"faults": faults, "demo": args.demo, "systems": systems}
        sandbox = Sandbox.from_file(args.records, **kwargs) if args.records else Sandbox(**kwargs)
    except ValueError as e:
        raise UsageError(str(e)) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with sandbox:
        described = sandbox.describe()
        if args.write_config:
            env = _demo_config(sandbox, args.write_config)
            print(f"wrote {args.write_config}; its tokens, for your shell:", file=sys.stderr)
            for var, value in env.items():
                print(f"export {var}={value}", file=sys.stderr)
        if args.json:
            print(json.dumps(described, indent=2), flush=True)
        else:
            width = max(map(len, described))
            print("patchassign sandbox: serving on 127.0.0.1 (Ctrl-C to stop)")
            for name, info in described.items():
                print(f"  {name:<{width}}  {info['url']}  token {info['token']}")
                for app, token in info.get("app_tokens", {}).items():
                    print(f"  {'':<{width}}  app {app}: API token {token}")
            sys.stdout.flush()
        await stop.wait()
    print("sandbox stopped", file=sys.stderr)
    return EXIT_OK


def _arun(coro: Coroutine[Any, Any, int]) -> int:
    """Run the command's coroutine, on uvloop when it is installed (``pip install
    patchassign[fast]``: about 40% more requests per second from the same core) unless
    ``PATCHASSIGN_NO_UVLOOP`` is set."""
    factory = None
    if not os.environ.get("PATCHASSIGN_NO_UVLOOP"):
        try:
            import uvloop
        except ImportError:
            pass
        else:
            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def _run_parsers(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="send a plan's changes (validated first), with a journal for --resume",
        description="Load the whole plan into the journal (every line checked; nothing is "
        "sent if one is bad), then send its changes, each system at its own pace. Every "
        "outcome goes to the journal (SQLite) so that a run killed at any moment can be "
        "finished with --resume without applying anything twice. With a PostgreSQL "
        "journal (--journal postgresql://...), any number of workers share the plan "
        "(start more with --join) and its systems' limits. The report goes to "
        "stdout; progress and logs to stderr. Exit status: 0 every change applied (or "
        "already in place), 1 not all, 2 bad input, 130 interrupted.",
    )
    run.add_argument(
        "plan",
        type=Path,
        nargs="?",
        help="the plan: JSON Lines (one change per line) or CSV (a header row); none with --join",
    )
    run.add_argument("--config", "-c", type=Path, required=True, help="systems TOML file")
    _run_options(run)
    run.set_defaults(func=_run)

    left = sub.add_parser(
        "leftovers",
        help="write the changes a run left undone, as a plan to run again",
        description="Write, as a plan (JSON Lines, each change as the plan gave it, with "
        "its id), the changes of a journal that are not done: by default conflicts, "
        "failures, unsent, cancelled and never started. `patchassign run redo.jsonl` does "
        "exactly those.",
    )
    _journal_argument(left)
    left.add_argument(
        "--status",
        metavar="LIST",
        help="comma-separated statuses (default: conflict,failed,unsent,cancelled,pending,taken)",
    )
    left.add_argument("--output", "-o", type=Path, help="write here instead of stdout")
    left.set_defaults(func=_leftovers)

    undo = sub.add_parser(
        "undo",
        help="write the plan that puts back what a run changed",
        description="Write, as a plan, the inverse of every change a journal's runs "
        "applied: each record back to the value it had, with `expect` (or `test` "
        "operations) set to the value the run wrote, so that the undo never overwrites "
        "what someone changed since (those end as conflicts). Changes that cannot be "
        "undone (delegations; records not read before the write) are counted on stderr.",
    )
    _journal_argument(undo)
    undo.add_argument("--output", "-o", type=Path, help="write here instead of stdout")
    undo.set_defaults(func=_undo)

    status = sub.add_parser(
        "status",
        help="what a run's journal holds now: per system, pending, taken, done, workers, rate",
        description="Show, per system, the items pending, taken (in progress), and done by "
        "status, the live workers holding its items and the outcomes per second over the "
        "last minute; then the runs or workers that worked on the plan. Works while a run "
        "is going on (SQLite: read only; PostgreSQL: any worker's journal).",
    )
    _journal_argument(status)
    status.add_argument("--json", action="store_true", help="print it as JSON")
    status.set_defaults(func=_status)

    check = sub.add_parser(
        "check",
        help="preflight: one authenticated read per system, no writes",
        description="Read one record per system (from the plan when one is given, else a "
        "harmless probe) and say, per system, whether it is reachable, whether it accepts the "
        "credentials, and how long it took. Exit status 0 when every system is fine, 1 when "
        "one is not, 2 on bad input. `patchassign run` does the same first.",
    )
    check.add_argument("plan", type=Path, nargs="?", help="a plan whose records to read")
    check.add_argument("--config", "-c", type=Path, required=True, help="systems TOML file")
    check.set_defaults(func=lambda args: _arun(_check(args)))


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--journal",
        metavar="FILE|URL",
        help="journal file (default: PLAN.journal), or a PostgreSQL database "
        "(postgresql://user@host/db[?schema=NAME]) shared by workers",
    )
    p.add_argument(
        "--join",
        action="store_true",
        help="work on the plan a PostgreSQL --journal holds (loaded by another worker; "
        "waits for it to be loaded)",
    )
    p.add_argument(
        "--lease",
        type=float,
        default=15.0,
        metavar="S",
        help="PostgreSQL journal: seconds a worker's items and limit shares stay its own "
        "without a heartbeat; a lost worker's items go back to the others after this "
        "(default 15)",
    )
    p.add_argument(
        "--format",
        choices=["jsonl", "csv"],
        help="the plan's format (default: from its extension, .csv or .jsonl, or content)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue a stopped run: skip what the journal has, read the rest before writing",
    )
    p.add_argument("--retry-failed", action="store_true", help="with --resume: redo failed ones")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="read records (GET only) and print the write each change would send; write nothing",
    )
    p.add_argument(
        "--skip-invalid", action="store_true", help="send the valid lines even if some are not"
    )
    p.add_argument("--results", type=Path, help="write one JSON line per plan line here")
    p.add_argument("--concurrency", type=int, help="requests in flight over all systems")
    p.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="SYSTEM=C[:RATE[:BURST]]",
        help="per-system limit: concurrency, requests/s and burst (repeatable), e.g. "
        "kintone=20 or perscom=8:10:5",
    )
    p.add_argument(
        "--progress",
        choices=["auto", "bar", "log", "none"],
        default="auto",
        help="progress display (auto: a bar on a terminal, log lines otherwise)",
    )
    p.add_argument(
        "--progress-interval",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds between log lines",
    )
    p.add_argument(
        "--verbose", "-v", action="store_true", help="log retries and slowdowns (never credentials)"
    )
    p.add_argument(
        "--no-preflight",
        action="store_true",
        help="skip the check of each system (one read) before the first write",
    )


def _limits(specs: list[str]) -> dict[str, Limits]:
    out: dict[str, Limits] = {}
    for spec in specs:
        name, eq, values = spec.partition("=")
        if not eq or not re.fullmatch(r"[a-z][a-z0-9_-]{0,63}", name):
            raise UsageError(
                f"--limit {spec!r}: expected SYSTEM=C[:RATE[:BURST]] with a system name"
            )
        parts = values.split(":")
        form = "expected SYSTEM=CONCURRENCY[:RATE[:BURST]], e.g. perscom=8:10:5"
        if len(parts) > 3:
            raise UsageError(f"--limit {spec!r}: {form}")
        try:
            conc = int(parts[0])
            rate = float(parts[1]) if len(parts) > 1 and parts[1] else None
            burst = int(parts[2]) if len(parts) > 2 else 1
        except ValueError:
            raise UsageError(
                f"--limit {spec!r}: {form} (whole numbers, the rate in requests/s)"
            ) from None
        try:
            out[name] = msgspec.convert({"concurrency": conc, "rate": rate, "burst": burst}, Limits)
        except msgspec.ValidationError as e:
            raise UsageError(f"--limit {spec!r}: {plain(str(e))}") from None
    return out


def _options(args: argparse.Namespace, config: Config, plan: Path | None) -> Options:
    journal = _check_run_args(args, plan)
    return Options(
        plan=plan,
        config=config,
        journal=journal,
        resume=args.resume,
        join=args.join,
        lease=args.lease,
        dry_run=args.dry_run,
        skip_invalid=args.skip_invalid,
        retry_failed=args.retry_failed,
        results=args.results,
        progress=args.progress,
        progress_interval=args.progress_interval,
        concurrency=args.concurrency,
        limits=_limits(args.limit),
        verbose=args.verbose,
        preflight=not args.no_preflight,
        format=args.format,
    )


def _check_run_args(args: argparse.Namespace, plan: Path | None) -> Path | str | None:
    """The command line's own errors (before any file is read); the journal to use."""
    if args.concurrency is not None and not 1 <= args.concurrency <= 10_000:
        raise UsageError("--concurrency must be between 1 and 10000")
    if args.retry_failed and not (args.resume or args.join):
        raise UsageError("--retry-failed goes with --resume (or --join)")
    if not 0 < args.progress_interval < 86_400:
        raise UsageError("--progress-interval must be between 0 and 86400 seconds")
    if args.results is not None:
        _writable(args.results, "--results")
    if not 0.5 <= args.lease <= 3600:
        raise UsageError("--lease must be between 0.5 and 3600 seconds")
    journal: Path | str | None = args.journal
    if args.join:
        if not is_url(args.journal):
            raise UsageError("--join needs --journal postgresql://... (a journal workers share)")
        if args.dry_run:
            raise UsageError("--dry-run works on a plan, not with --join")
    elif plan is None:
        raise UsageError("give the plan to run (or --join a PostgreSQL --journal)")
    if journal is not None and not is_url(journal):
        journal = Path(journal)
    if args.dry_run and is_url(journal):
        journal = None  # a dry run keeps nothing: it works from a throwaway journal
    return journal


async def _cancellable(coro: Coroutine[Any, Any, int]) -> int:
    """Run ``coro``; SIGTERM stops it like Ctrl-C does (cleanly, then exit 130)."""
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await task
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)


async def _execute(opts: Options) -> int:
    try:
        report = await run_plan(opts)
    except InvalidPlan as e:
        v = e.validation
        _print_invalid(v)
        if not v.valid:  # skipping would leave nothing: the file is not a plan as read
            raise UsageError(
                f"none of the {v.invalid:,} {v.unit}(s) of {opts.plan_label} is a valid change; "
                "nothing was sent (is it a plan? see docs/plan-format.md)"
            ) from None
        raise UsageError(
            f"{v.invalid:,} invalid {v.unit}(s) in {opts.plan_label}; nothing was sent "
            "(fix them, or pass --skip-invalid)"
        ) from None
    except PreflightFailed as e:
        print(f"patchassign run: {e} (fix it, or pass --no-preflight)", file=sys.stderr)
        return EXIT_FAILED
    print(report.render(), flush=True)
    return EXIT_OK if report.all_applied and not report.results_error else EXIT_FAILED


def _print_invalid(v: Validation) -> None:
    for line, error in v.errors[:50]:
        print(f"{v.unit} {line}: {error}", file=sys.stderr)
    if v.invalid > 50:
        print(f"... and {v.invalid - 50:,} more", file=sys.stderr)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Log lines to whatever ``sys.stderr`` is when they are written: the progress bars
    redirect it while they are drawn, and print the lines above the bars."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _logging(verbose: bool) -> None:
    handler = _Stderr()
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler])
    if verbose:  # our own debug lines, not every library's
        for name in ("asyncio", "aiohttp"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _run(args: argparse.Namespace) -> int:
    _logging(args.verbose)
    _check_run_args(args, args.plan)
    _limits(args.limit)
    config = _load(args.config, lazy=True)
    known = set(config.adapters) | set(config.broken)
    for name in _limits(args.limit):
        if name not in known:
            raise UsageError(
                f"--limit {name}=...: {args.config} configures no system {name!r} (systems: "
                f"{', '.join(sorted(known))})"
            )
    opts = _options(args, config, args.plan)
    with _plan_file(args.plan) as plan:
        if plan != args.plan:
            if opts.journal is None and not opts.dry_run:
                raise UsageError(
                    f"a plan read from {_source(args.plan)} needs --journal FILE|URL: "
                    "where the run keeps its outcomes (and --resume finds them)"
                )
            opts.plan, opts.plan_name = plan, str(args.plan)
        return _arun(_cancellable(_execute(opts)))


async def _check(args: argparse.Namespace) -> int:
    config = _load(args.config, lazy=True)
    samples: list[Change] = []
    systems = sorted(config.adapters)
    broken = dict(config.broken)
    if args.plan is not None:
        with _plan_file(args.plan) as plan:
            assert plan is not None
            v = _validated(plan, config, None)
        if v.invalid:
            _print_invalid(v)
            raise UsageError(f"{v.invalid:,} invalid line(s) in {args.plan}")
        samples = list(v.samples.values())
        systems = sorted(v.samples)
        broken = v.unusable
    for name, why in sorted(broken.items()):
        print(f"check: {name}: FAILED: {why}")
    async with Dispatcher(
        {s: config.adapters[s] for s in systems},
        limits={s: lim for s, lim in config.limits.items() if s in systems},
        retry=config.retry,
        verify_tls=config.verify_tls,
    ) as d:
        checks = await d.check(samples, systems=systems)
    for c in checks.values():
        print(render_check(c, config))
    return EXIT_OK if all(c.ok for c in checks.values()) and not broken else EXIT_FAILED


def _load(path: Path, *, lazy: bool = False) -> Config:
    try:
        return load_config(path, lazy=lazy)
    except ConfigError as e:
        raise UsageError(str(e)) from None


def _validated(path: Path, config: Config | None, fmt: str | None) -> Validation:
    try:
        return validate_plan(path, config, format=fmt)
    except PlanError as e:
        raise UsageError(str(e)) from None


def _open_journal(where: str, *, read_only: bool = False) -> JournalLike:
    if not is_url(where) and Path(where).is_dir():
        raise UsageError(f"{where} is a directory, not a journal")
    if not is_url(where) and not Path(where).is_file():
        raise UsageError(f"no such journal: {where}")
    try:
        journal = open_journal(where, read_only=read_only)
    except JournalError as e:
        raise UsageError(str(e)) from None
    if not journal.loaded:
        journal.close()
        raise UsageError(f"{journal.where} holds no plan (is it a journal?)")
    return journal


def _status(args: argparse.Namespace) -> int:
    journal = _open_journal(args.journal, read_only=True)
    try:
        status = journal.status()
    finally:
        journal.close()
    if args.json:
        sys.stdout.write(msgspec.json.encode(status).decode() + "\n")
    else:
        sys.stdout.write(render_status(status))
    return EXIT_OK


def _leftovers(args: argparse.Namespace) -> int:
    statuses = (
        [s.strip() for s in args.status.split(",") if s.strip()]
        if args.status
        else list(LEFTOVER_STATUSES)
    )
    known = {"applied", "recovered", "unchanged", "invalid", *LEFTOVER_STATUSES}
    unknown = [s for s in statuses if s not in known]
    if unknown or not statuses:
        raise UsageError(
            f"--status: unknown status {', '.join(map(repr, unknown)) or '(none)'} "
            f"(statuses: {', '.join(sorted(known))})"
        )
    journal = _open_journal(args.journal)
    try:
        with _output(args.output) as out:
            n = write_leftovers(journal, out, statuses)
        invalid = journal.counts()
        bad = (
            sum(c for (_, s), c in invalid.items() if s == "invalid")
            if "invalid" in statuses
            else 0
        )
    finally:
        journal.close()
    print(f"leftovers: {counted(n, 'change')} ({', '.join(statuses)})", file=sys.stderr)
    if bad:
        print(
            f"leftovers: {counted(bad, 'invalid plan line')} (not changes) not written; "
            "fix them in the plan",
            file=sys.stderr,
        )
    return EXIT_OK


def _undo(args: argparse.Namespace) -> int:
    journal = _open_journal(args.journal)
    try:
        with _output(args.output) as out:
            n, skipped = write_undo(journal, out)
    finally:
        journal.close()
    print(f"undo: {counted(n, 'change')} to put back", file=sys.stderr)
    for why, count in skipped.most_common():
        print(f"undo: {count:,} not undoable: {why}", file=sys.stderr)
    return EXIT_OK


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[IO[bytes]]:
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with open(path, "wb") as f:
        yield f


def _writable(path: Path, option: str) -> None:
    """A file the run will write at its end: said wrong now, before anything is sent."""
    folder = path.parent
    if path.is_dir():
        raise UsageError(f"{option} {path}: a directory, not a file")
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: no such directory: {folder}")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{option} {path}: not writable")


def _piped(what: str) -> IO[bytes]:
    """Standard input, where something is piped in (a terminal would wait, silently)."""
    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError(f"- reads {what} from standard input: pipe one in (... | patchassign ...)")
    return sys.stdin.buffer


def _source(path: Path) -> str:
    return "standard input" if str(path) == "-" else f"a pipe ({path})"


@contextlib.contextmanager
def _plan_file(path: Path | None) -> Iterator[Path | None]:
    """The plan to read, as a file: ``path`` itself when it is one. Standard input (``-``)
    and pipes (the shell's ``<(...)``) are copied to a temporary file first: a plan is
    read more than once (its format guessed, validated, then loaded)."""
    stdin = str(path) == "-"
    if path is None or (not stdin and path.is_file()):
        yield path
        return
    if not stdin:
        if path.is_dir():
            raise UsageError(f"{path} is a directory, not a file")
        if not path.exists():
            raise UsageError(f"no such file: {path}")
    with tempfile.TemporaryDirectory(prefix="patchassign-plan-") as tmp:
        copy = Path(tmp) / ("stdin" if stdin else path.name)
        try:
            with contextlib.ExitStack() as stack:
                source = _piped("the plan") if stdin else stack.enter_context(open(path, "rb"))
                with open(copy, "wb") as f:
                    shutil.copyfileobj(source, f, 1 << 20)
        except OSError as e:
            raise UsageError(f"cannot read {path}: {e.strerror or e}") from None
        try:
            yield copy
        except (PlanError, UsageError) as e:
            if str(copy) not in str(e):
                raise
            raise UsageError(str(e).replace(str(copy), str(path))) from None


# -- validate, diff, apply ---------------------------------------------------------------------


def _validate(args: argparse.Namespace) -> int:
    with _plan_file(args.file) as path:
        assert path is not None
        return _validate_file(args, path, args.file)


def _validate_file(args: argparse.Namespace, path: Path, name: Path) -> int:
    as_plan = (
        args.plan
        or args.format is not None
        or path.suffix in (".jsonl", ".ndjson", ".csv")
        or (not args.patch and _looks_like_plan(path))
    )
    if not as_plan:
        data = path.read_bytes()
        try:
            patch = JsonPatch.from_json(data, case_insensitive=args.case_insensitive)
        except PatchError as e:
            if _array_of_changes(data):
                raise UsageError(
                    f"{name}: a JSON array of changes, not a JSON Patch: a plan is JSON Lines, "
                    "one change per line (jq -c '.[]' turns the array into lines)"
                ) from None
            raise UsageError(f"{name}: {e}") from None
        print(f"{name}: a valid JSON Patch of {len(patch)} operation(s)")
        return EXIT_OK
    config = _load(args.config, lazy=True) if args.config else None
    v = _validated(path, config, args.format)
    if v.invalid:
        _print_invalid(v)
    systems = ", ".join(f"{n:,} {s}" for s, n in sorted(v.by_system.items()))
    print(
        f"{name}: {v.valid:,} valid change(s) ({systems or 'none'}), {v.invalid:,} invalid"
        + ("" if config else " (adapters not checked: give --config to check values)")
    )
    if v.unusable:
        raise UsageError(str(unusable_error(v)))
    # Bad input: the same exit status as `run` gives for the same plan.
    return EXIT_OK if not v.invalid else EXIT_USAGE


def _array_of_changes(data: bytes) -> bool:
    try:
        doc = msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return False
    first = doc[0] if isinstance(doc, list) and doc else None
    return isinstance(first, dict) and "system" in first and "op" not in first


def _looks_like_plan(path: Path) -> bool:
    if path.suffix.lower() == ".csv":
        return True
    head = _head_text(path)
    first = head.split("\n", 1)[0].lower()
    # JSON Lines, or a CSV header (a JSON Patch starts with "[")
    return head.startswith("{") or ("system" in first and "record" in first and "[" not in first)


def _json_file(path: Path) -> Any:
    """A JSON document from ``path``: a file, a pipe (the shell's ``<(...)``), or ``-`` for
    standard input; read once."""
    if str(path) == "-":
        data = _piped("a JSON document").read()
    else:
        if path.is_dir():
            raise UsageError(f"{path} is a directory, not a JSON file")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise UsageError(f"no such file: {path}") from None
        except OSError as e:
            raise UsageError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError as e:
        raise UsageError(f"{path}: not JSON: {why_not_json(data, e)}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not JSON: not valid UTF-8") from None
    except RecursionError:
        raise UsageError(f"{path}: {LimitExceeded()}") from None


def _one_stdin(*paths: Path) -> None:
    if [str(p) for p in paths].count("-") > 1:
        raise UsageError("only one of the files can be - (standard input)")


def _diff(args: argparse.Namespace) -> int:
    _one_stdin(args.a, args.b)
    a, b = _json_file(args.a), _json_file(args.b)
    try:
        if args.merge:
            if args.guard:
                raise UsageError("--guard applies to JSON Patch output, not --merge")
            out: Any = make_merge_patch(a, b)
        else:
            out = make_patch(a, b, guard=args.guard).to_list()
    except PatchError as e:  # B sets a member to null: no merge patch says that
        print(f"patchassign diff: {e}", file=sys.stderr)
        return EXIT_FAILED
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(out), indent=2).decode() + "\n")
    return EXIT_OK


def _apply(args: argparse.Namespace) -> int:
    _one_stdin(args.doc, args.patch)
    doc, patch = _json_file(args.doc), _json_file(args.patch)
    if not args.merge and isinstance(patch, dict) and "op" not in patch:
        # The core's hint names its Python function; here the fix is an argument.
        swapped = (
            isinstance(doc, list) and bool(doc) and isinstance(doc[0], dict) and "op" in doc[0]
        )
        hint = (
            f"the arguments are DOC PATCH: {args.doc} looks like the patch"
            if swapped
            else "an RFC 7396 merge patch? pass --merge"
        )
        print(
            f"patchassign apply: {args.patch}: a JSON Patch is an array of operations, got an "
            f"object ({hint})",
            file=sys.stderr,
        )
        return EXIT_FAILED
    try:
        if args.merge:
            result = apply_merge_patch(doc, patch, case_insensitive=args.case_insensitive)
        else:
            result = apply_patch(doc, patch, case_insensitive=args.case_insensitive)
    except PatchError as e:
        print(f"patchassign apply: {e}", file=sys.stderr)
        return EXIT_FAILED
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(result), indent=2).decode() + "\n")
    return EXIT_OK


def _core_parsers(sub: Any) -> None:
    v = sub.add_parser(
        "validate",
        help="check a plan (JSON Lines or CSV) or a JSON Patch document without sending anything",
    )
    v.add_argument("file", type=Path)
    v.add_argument("--config", "-c", type=Path, help="also check values against each system")
    kind = v.add_mutually_exclusive_group()
    kind.add_argument("--plan", action="store_true", help="the file is a plan")
    kind.add_argument("--patch", action="store_true", help="the file is a JSON Patch")
    v.add_argument("--case-insensitive", action="store_true", help="patch paths ignore case")
    v.add_argument("--format", choices=["jsonl", "csv"], help="the plan's format")
    v.set_defaults(func=_validate)

    d = sub.add_parser("diff", help="print the patch that turns A.json into B.json")
    d.add_argument("a", type=Path, help="the document before (- for standard input)")
    d.add_argument("b", type=Path, help="the document after (- for standard input)")
    d.add_argument("--merge", action="store_true", help="an RFC 7396 merge patch instead")
    d.add_argument("--guard", action="store_true", help="add test ops pinning the old values")
    d.set_defaults(func=_diff)

    a = sub.add_parser("apply", help="apply PATCH.json to DOC.json and print the result")
    a.add_argument("doc", type=Path, help="the JSON document (- for standard input)")
    a.add_argument(
        "patch",
        type=Path,
        help="a JSON Patch (an array of operations), or with --merge a merge patch (- for "
        "standard input)",
    )
    a.add_argument("--merge", action="store_true", help="PATCH is an RFC 7396 merge patch")
    a.add_argument(
        "--case-insensitive", action="store_true", help="paths ignore case; leading slash optional"
    )
    a.set_defaults(func=_apply)


# -- demo -------------------------------------------------------------------------------------


def _demo_parser(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="start the sandbox, run a reassignment plan against it, check the result",
        description="Start the fake servers on 127.0.0.1, seed them with records owned "
        "by team A, write a plan that moves them all to team B, run it with some faults on "
        "(429s, 503s, dropped connections, concurrent editors), print the report, and check "
        "the servers' final state. Needs no credentials and no network.",
    )
    demo.add_argument(
        "--records", type=int, default=600, metavar="N", help="records per system (default 600)"
    )
    demo.add_argument("--no-faults", action="store_true", help="servers that never misbehave")
    demo.add_argument("--seed", type=int, default=7, help="seed of the servers' faults")
    demo.add_argument("--keep", type=Path, metavar="DIR", help="keep plan, config, journal here")
    demo.add_argument(
        "--progress",
        choices=["auto", "bar", "log", "none"],
        default="auto",
        help="progress display",
    )
    demo.set_defaults(func=lambda args: _arun(_cancellable(_demo(args))))


async def _demo(args: argparse.Namespace) -> int:
    from .sandbox import SYSTEMS, Faults, Sandbox, demo_mismatches, demo_plan, exact_faults

    if not 1 <= args.records <= 200_000:
        raise UsageError("--records must be between 1 and 200000")
    faults: dict[str, Faults] | None = None
    if not args.no_faults:
        every = Faults(
            throttle=0.03, retry_after=1, unavailable=0.03, drop=0.01, editor=0.05, seed=args.seed
        )
        # No concurrent editor on Findable: a lost delegate whose original an editor
        # touched cannot be proven unsent and ends "unknown, not resent", by design.
        faults = exact_faults(every)
    with contextlib.ExitStack() as stack:
        if args.keep:
            folder = args.keep
            folder.mkdir(parents=True, exist_ok=True)
        else:
            folder = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="patchassign-demo-"))
            )
        plan = folder / "plan.jsonl"
        journal = folder / "plan.jsonl.journal"
        journal.unlink(missing_ok=True)
        for extra in ("-wal", "-shm"):
            Path(str(journal) + extra).unlink(missing_ok=True)
        async with Sandbox(demo=args.records, faults=faults) as sb:
            with open(plan, "wb") as f:
                for change in demo_plan(args.records):
                    f.write(msgspec.json.encode(change) + b"\n")
            env = _demo_config(sb, folder / "systems.toml")
            config = load_config(folder / "systems.toml", env=env)
            n = len(SYSTEMS) * args.records
            print(
                f"patchassign demo: {len(SYSTEMS)} fake systems on 127.0.0.1, "
                f"{args.records:,} records each, "
                f"owned by team A; moving all {n:,} to team B"
                + ("" if args.no_faults else " with faults on (429, 503, drops, editors)"),
                file=sys.stderr,
            )
            print(f"plan: {plan}  config: {folder / 'systems.toml'}", file=sys.stderr)
            opts = Options(
                plan=plan,
                config=config,
                journal=journal,
                results=folder / "results.jsonl",
                progress=args.progress,
                progress_interval=2.0,
            )
            report = await run_plan(opts)
            print(report.render(), flush=True)
            wrong = demo_mismatches(sb, args.records)
            doubles = sum(
                1 for server in sb for n_writes in server.stats.writes.values() if n_writes > 1
            )
            faults_seen = sum(
                n
                for server in sb
                for (_, status), n in server.stats.requests.items()
                if status in (429, 503)
            ) + sum(sum(server.stats.dropped.values()) for server in sb)
        if faults is not None:
            print(
                f"faults the servers injected and the run absorbed: {faults_seen:,}",
                file=sys.stderr,
            )
        if wrong or doubles:
            for m in wrong[:20]:
                print(f"MISMATCH {m}", file=sys.stderr)
            print(
                f"verification FAILED: {len(wrong):,} records not as planned, "
                f"{doubles:,} applied twice",
                file=sys.stderr,
            )
            return EXIT_FAILED
        print(
            f"verified: all {n:,} records are now with team B, each change applied once",
            file=sys.stderr,
        )
        if args.keep:
            print(
                f"kept in {folder}: plan.jsonl, systems.toml, results.jsonl, the journal",
                file=sys.stderr,
            )
    return EXIT_OK if report.all_applied and not report.results_error else EXIT_FAILED


def _toml(value: Any) -> str:
    """A TOML value for the settings a fake server gives (text, numbers, flags, tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def _demo_config(sb: Any, path: Path) -> dict[str, str]:
    """A systems.toml for the running sandbox; returns the environment holding the tokens."""
    env: dict[str, str] = {}
    lines = ["# patchassign demo: the sandbox's servers; tokens come from the environment", ""]
    for name, server in sb.servers.items():
        table, variables = server.settings()
        env.update(variables)
        lines.append(f"[systems.{name}]")
        lines += [f"{key} = {_toml(value)}" for key, value in table.items()]
        lines.append("")
    lines += [
        "[retry]",
        "# The sandbox answers on 127.0.0.1 and applies a write at once unless its `late`",
        "# fault is on: a short timeout and settle time (after an unconfirmed write to a",
        "# system without a version token, its record is read back timeout + settle after",
        "# the write was sent). Real systems: leave both at their defaults.",
        "timeout = 5.0",
        "settle = 1.0",
        "# The demo's faults hit one request in eight or so: room for a few more tries.",
        "attempts = 10",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return env


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if "journal_parser" in args:
        _journal_given(args)
    try:
        status: int = args.func(args)
        return status
    except BrokenPipeError:
        # The reader went away (`patchassign leftovers J | head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except (UsageError, ConfigError, PlanError) as e:
        print(f"patchassign {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except PatchassignError as e:  # any other error of ours: said, never a traceback
        print(f"patchassign {args.command}: {e}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as e:
        print(f"patchassign {args.command}: {e.strerror or e}: {e.filename or ''}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(f"patchassign {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
