"""Library commands: index, search, similar, captions, duplicates, watch, status, folders,
repair, remove-folder.

Every user error is raised as a `PhotosearchError`, which `cli.dispatch` prints as one line
(exit 2); malformed values (a date, a count) are refused by argparse (exit 2) before anything
is loaded. Arguments are checked before expensive work: the model is loaded only once they
are valid, the caption bank only once the photo is known. The model is `--model CKPT`, else
the shipped default (`engine.embedder.load_embedder`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from cli import _LONE_SURROGATE, printable
from engine.embedder import load_embedder
from engine.errors import (
    EmptyQueryError,
    FolderNotFoundError,
    LibraryUnreadableError,
    PhotosearchError,
)
from engine.library import Library
from engine.settings import default_library_dir

log = logging.getLogger(__name__)

# EXIF dates before 1800 are placeholders ("0000:00:00"), so no photo is dated earlier; the
# bounds also keep every accepted date convertible to a timestamp (year 1 is not).
EARLIEST_DATE = datetime(1800, 1, 1)


class ArgumentError(PhotosearchError):
    """Arguments that parse but make no sense: a count below 1, a date range backwards."""


def _library_dir(args: argparse.Namespace) -> Path:
    return Path(args.library).expanduser() if args.library else default_library_dir()


def _open(
    args: argparse.Namespace, *, write: bool, reembed: bool = False, rerank: bool | None = None
) -> Library:
    """Read commands open read-only and never take the writer lock (issue 11 #8): an
    `index` or `watch` started while a search runs must not find the library locked."""
    library_dir = _library_dir(args)
    if not write and not (library_dir / "catalog.db").exists():
        raise LibraryUnreadableError(
            f"no library at {library_dir.absolute()}; create one with: photosearch index "
            f"--library {library_dir} FOLDER"
        )
    embedder = load_embedder(args.model)
    return Library.open(library_dir, embedder, read_only=not write, reembed=reembed, rerank=rerank)


def _print(*parts: object, **kwargs: Any) -> None:
    """print() with every byte of a file name that is not UTF-8 escaped (cli.printable)."""
    print(*(printable(p) for p in parts), **kwargs)


def _print_json(data: object) -> None:
    """JSON on stdout that every locale can write. A name that is not UTF-8 keeps its exact
    bytes as \\udcXX escapes (Python's json.loads turns them back into the str that
    open() and os.fsencode() take); if the locale cannot encode some text, all non-ASCII
    is escaped instead."""
    text = json.dumps(data, indent=2, ensure_ascii=False)
    text = _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    try:
        text.encode(sys.stdout.encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        text = json.dumps(data, indent=2)
    sys.stdout.write(text + "\n")


def _parse_date(text: str) -> datetime:
    """--from: YYYY-MM-DD (that day's start) or an ISO date-time, as local time."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (use YYYY-MM-DD): {text}") from exc
    if value.tzinfo is not None:  # photo dates are local wall-clock times
        value = value.astimezone().replace(tzinfo=None)
    return value


def _parse_end_date(text: str) -> datetime:
    """--to: a bare YYYY-MM-DD includes that whole day (--from D --to D is one day)."""
    value = _parse_date(text)
    try:
        date.fromisoformat(text)
    except ValueError:
        return value  # a date-time: exactly that moment
    return datetime.combine(value.date(), time.max)


# Values that parse but make no sense are refused here, before the model is loaded, as one
# line (argparse's own errors, for values that do not parse, come with the usage text).


def _check_top_k(args: argparse.Namespace) -> None:
    if args.top_k < 1:
        raise ArgumentError(f"--top-k must be at least 1, got {args.top_k}")


def _check_dates(args: argparse.Namespace) -> None:
    for option, value in (("--from", args.date_from), ("--to", args.date_to)):
        if value is not None and value < EARLIEST_DATE:
            raise ArgumentError(
                f"{option} {value.date().isoformat()} is before {EARLIEST_DATE:%Y-%m-%d}, the earliest "
                "date a photo can have; leave the option out for no limit"
            )
    if args.date_from and args.date_to and args.date_from > args.date_to:
        raise ArgumentError(
            f"--from {args.date_from:%Y-%m-%d %H:%M} is after --to {args.date_to:%Y-%m-%d %H:%M}"
        )


def _clean_query(text: str) -> str:
    """A query with the bytes that are not UTF-8 dropped (the shell passed raw bytes).

    Python hands such argv bytes over as lone surrogates, which no text encoder or SQLite
    accepts; the readable rest of the query still makes a search."""
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text
    raw = text.encode("utf-8", "surrogateescape" if _only_escapes(text) else "replace")
    _print(
        "photosearch: note: the query has bytes that are not UTF-8 text; they were ignored",
        file=sys.stderr,
    )
    return raw.decode("utf-8", "replace").replace("\ufffd", " ")


def _only_escapes(text: str) -> bool:
    return all(not "\ud800" <= ch <= "\udfff" or "\udc80" <= ch <= "\udcff" for ch in text)


# -- commands ----------------------------------------------------------------------------


def cmd_index(args: argparse.Namespace) -> int:
    folders = [Path(f).expanduser() for f in args.folders]
    for folder in folders:
        if not folder.is_dir():
            raise FolderNotFoundError(f"folder not found: {folder.absolute()}")
    lib = _open(args, write=True, reembed=args.reembed, rerank=args.rerank)
    try:
        for folder in folders:
            lib.add_folder(folder)
        if not lib.folders():
            raise FolderNotFoundError(
                "no folders to index; name at least one: photosearch index FOLDER"
            )
        bar, progress = _index_progress(args)
        cancel = threading.Event()
        try:
            report = lib.index(progress=progress, cancel=cancel)
        except KeyboardInterrupt:
            cancel.set()
            raise
        finally:
            if bar is not None:
                bar.close()
        if args.json:
            _print_json(report.to_json())
        else:
            _print_index_report(report)
    finally:
        lib.close()
    return 0


def _index_progress(args: argparse.Namespace) -> tuple[Any, Callable[[Any], None] | None]:
    """A tqdm bar on a terminal (never with --json): (bar or None, progress callback)."""
    if args.json or not sys.stderr.isatty():
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=0, unit="photo", file=sys.stderr, dynamic_ncols=True)

    def progress(p: Any) -> None:
        if bar.total != p.total:
            bar.reset(total=p.total)
        bar.n = p.done
        bar.set_postfix_str(f"failed {p.failed}" if p.failed else "", refresh=False)
        bar.refresh()

    return bar, progress


def _print_index_report(report: Any) -> None:
    _print(
        f"indexed {report.indexed}, unchanged {report.unchanged}, moved {report.moved}, "
        f"removed {report.removed}, offline {report.offline}, "
        f"failed {len(report.failed)}"
    )
    for path, reason in report.failed[:20]:
        _print(f"  failed: {path}: {reason}")
    if len(report.failed) > 20:
        _print(f"  ... and {len(report.failed) - 20} more (see: photosearch status)")


def cmd_repair(args: argparse.Namespace) -> int:
    """Rebuild a lost or damaged catalog.db (the command the engine's errors name)."""
    library_dir = _library_dir(args)
    if not library_dir.is_dir():
        raise LibraryUnreadableError(f"no library at {library_dir.absolute()}")
    embedder = load_embedder(args.model)
    bar, progress = _index_progress(args)
    cancel = threading.Event()
    try:
        report = Library.repair(library_dir, embedder, progress=progress, cancel=cancel)
    except KeyboardInterrupt:
        cancel.set()
        raise
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        _print_json(report.to_json())
        return 0
    if not report.damaged:
        _print(f"the catalog at {library_dir.absolute()} is healthy; nothing to repair")
        return 0
    _print(f"repaired the catalog: {report.problem}")
    if report.moved_to:
        _print(f"  the damaged file is kept as {library_dir.absolute() / report.moved_to}")
    source = {"catalog": "the damaged catalog", "backup": "the folders.json backup"}
    origin = " and ".join(source.get(s, s) for s in (report.folders_from or "").split("+") if s)
    if report.folders:
        _print(f"  {len(report.folders)} folder(s) restored from {origin}:")
        for folder in report.folders:
            _print(f"    {folder}")
    else:
        _print("  no folder list could be recovered; add folders with: photosearch index FOLDER")
    _print(f"  {report.vectors_recovered} stored vectors recovered (those photos are not re-embedded)")
    if report.index is not None:
        _print_index_report(report.index)
    return 0


def _require_query(text: str) -> str:
    text = _clean_query(text or "")
    if not text.strip():
        raise EmptyQueryError("the search query is empty; describe what the photo shows")
    return text.strip()


def _folder_filter(lib: Library, text: str) -> str:
    """--folder as the path search compares photo paths with, if the library holds any
    photos there: at or under one of its folders (even offline), or above one."""
    given = Path(text).expanduser()
    roots = [f.path for f in lib.folders()]
    candidates = [os.path.abspath(given)]
    if given.exists():
        candidates.append(str(given.resolve()))  # a link to a library folder
    for candidate in candidates:
        for root in roots:
            if _is_within(candidate, root) or _is_within(root, candidate):
                return candidate
    if not given.exists():
        raise FolderNotFoundError(f"folder not found: {candidates[0]}")
    listed = ", ".join(roots) if roots else "none yet"
    raise FolderNotFoundError(
        f"folder is not in the library: {candidates[0]} (library folders: {listed})"
    )


def _is_within(path: str, root: str) -> bool:
    root = root.rstrip(os.sep)
    return path == root or path.startswith(root + os.sep)


def _filters_note(args: argparse.Namespace) -> str:
    parts = []
    if args.folder:
        parts.append(f"--folder {args.folder}")
    if args.date_from:
        parts.append(f"--from {args.date_from:%Y-%m-%d}")
    if args.date_to:
        parts.append(f"--to {args.date_to:%Y-%m-%d}")
    return "no photos match the filters (" + ", ".join(parts) + ")"


def _hit_json(hit: Any) -> dict[str, object]:
    # status tells a script whether the file can be opened now ("ok") or sits on a drive
    # that is not connected ("offline").
    return {**hit.to_json(), "status": hit.status}


def _print_hits(result: Any, as_json: bool, filters_note: str | None = None) -> None:
    """`filters_note` says which filters left nothing, so [] is not mistaken for 'no match'."""
    if as_json:
        _print_json([_hit_json(h) for h in result.hits])
        if not result.hits and filters_note:
            _print(f"photosearch: note: {filters_note}", file=sys.stderr)
        return
    if not result.hits:
        _print(filters_note or "no photos found")
        return
    confident = result.confident
    by_date = result.sort == "date"
    if result.weak:
        _print(
            f"no good match (best score {result.best_score:.3f} < {result.threshold:.3f}); "
            "closest photos:"
        )
    else:
        _print(f"{confident} match{'' if confident == 1 else 'es'}")
    _print(f"{'score':>7}  {'':3}  {'date        ' if by_date else ''}path")
    for i, hit in enumerate(result.hits):
        if i == confident and i > 0:
            _print("--- Less likely ---")
        offline = "  (offline)" if hit.status == "offline" else ""
        stars = "*" * hit.strength  # 3 strong, 2 good, 1 weak
        when = (f"{hit.date:%Y-%m-%d}  " if hit.date else " " * 12) if by_date else ""
        _print(f"{hit.score:7.3f}  {stars:3}  {when}{hit.path}{offline}")


def cmd_search(args: argparse.Namespace) -> int:
    # with --like the text may be empty: the photo alone is the query
    query = _clean_query(args.query or "").strip() if args.like else _require_query(args.query)
    _check_top_k(args)
    _check_dates(args)
    lib = _open(args, write=False, rerank=args.rerank)
    try:
        folder = _folder_filter(lib, args.folder) if args.folder else None
        like = lib.photo(args.like).path if args.like else None
        result = lib.search_text(
            query, top_k=args.top_k, folder=folder, date_from=args.date_from,
            date_to=args.date_to, like_photo=like, sort=args.sort,
        )
        filtered = args.folder or args.date_from or args.date_to
        _print_hits(result, args.json, _filters_note(args) if filtered else None)
    finally:
        lib.close()
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    _check_top_k(args)
    lib = _open(args, write=False)
    try:
        _print_hits(lib.similar_photos(args.photo, top_k=args.top_k), args.json)
    finally:
        lib.close()
    return 0


def _caption_progress() -> Callable[[int, int], None]:
    """Says once, on stderr, that the caption bank is being embedded for this model."""
    bar: list[Any] = []

    def report(done: int, total: int) -> None:
        if not bar:
            _print(
                f"preparing {total:,} captions for this model (once per model)...",
                file=sys.stderr,
            )
            from tqdm import tqdm

            bar.append(
                tqdm(total=total, unit="caption", file=sys.stderr, disable=not sys.stderr.isatty())
            )
        bar[0].n = done
        bar[0].refresh()
        if done >= total:
            bar[0].close()

    return report


def cmd_captions(args: argparse.Namespace) -> int:
    _check_top_k(args)
    lib = _open(args, write=False, rerank=args.rerank)
    try:
        # Embedding the bank takes minutes the first time: know the photo first.
        lib.photo(args.photo)
        lib.prepare_captions(progress=_caption_progress())
        hits = lib.similar_captions(args.photo, top_k=args.top_k)
        if args.json:
            _print_json([h.to_json() for h in hits])
        elif not hits:
            _print("no captions to suggest yet (search a few times, or use a model with a caption bank)")
        else:
            for hit in hits:  # stars: 3 strong, 2 good, 1 weak (--json keeps the raw score)
                _print(f"{hit.score:7.3f}  {'*' * hit.strength:3}  {hit.caption}")
    finally:
        lib.close()
    return 0


def cmd_duplicates(args: argparse.Namespace) -> int:
    lib = _open(args, write=False)
    try:
        groups = lib.duplicate_groups()
        if args.json:
            _print_json([g.to_json() for g in groups])
        elif not groups:
            _print("no near-identical photos found")
        else:
            photos = sum(len(g.paths) for g in groups)
            _print(f"{len(groups)} group(s) of near-identical photos ({photos} photos)")
            for i, group in enumerate(groups, 1):
                _print(f"group {i} ({len(group.paths)} photos):")
                _print(f"  {group.paths[0]}  (representative)")
                for path in group.paths[1:]:
                    _print(f"  {path}")
    finally:
        lib.close()
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from engine.watcher import FolderWatcher

    lib = _open(args, write=True, rerank=args.rerank)
    try:
        report = lib.index()
        _print(
            f"reconciled: indexed {report.indexed}, moved {report.moved}, removed "
            f"{report.removed}, offline {report.offline}, failed {len(report.failed)}",
            flush=True,
        )

        def on_change(paths: list[Path]) -> None:
            r = lib.index_paths(paths)
            if r.indexed or r.moved or r.removed or r.failed:
                _print(
                    f"indexed {r.indexed}, moved {r.moved}, removed {r.removed}, "
                    f"failed {len(r.failed)}",
                    flush=True,
                )

        online = [Path(f.path) for f in lib.folders() if f.online]
        if not online:
            raise FolderNotFoundError("no folders to watch; add one with: photosearch index FOLDER")
        watcher = FolderWatcher(online, on_change)
        watcher.start()
        _print(f"watching {len(online)} folder(s); press Ctrl-C to stop", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            _print("stopped", flush=True)
        finally:
            watcher.stop()
    finally:
        lib.close()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    lib = _open(args, write=False)
    try:
        status = lib.status()
        # The full quick_check (opening checks only the small tables): damage among the
        # vectors is noticed here, not only when a search trips over it (issue 11 #5).
        problems = lib.check_catalog()
        if args.json:
            data = status.to_json()
            data["catalog_problems"] = problems
            data["failed"] = [{"path": p, "reason": r} for p, r in lib.failures()]
            _print_json(data)
            return 0
        _print(f"library:  {status.library_dir}")
        if problems:
            _print(
                f"catalog:  DAMAGED ({problems[0]}); rebuild it with: photosearch repair "
                f"--library {status.library_dir}"
            )
        else:
            _print("catalog:  ok")
        _print(f"model:    {status.model_id}")
        _print(f"photos:   {status.photo_count} ({status.offline_photos} offline)")
        for folder in status.folders:
            _print(f"folder:   {folder.path} [{_folder_state(folder)}] {folder.photo_count} photos")
        _print(f"failures: {status.failures}")
        for path, reason in lib.failures()[:20]:
            _print(f"  {path}: {reason}")
    finally:
        lib.close()
    return 0


def _offline_since(folder: Any) -> datetime | None:
    """When the folder went offline, if the engine records it (a datetime or a timestamp)."""
    value = getattr(folder, "offline_since", None)
    if value is None or isinstance(value, datetime):
        return value
    try:
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value)
        return datetime.fromisoformat(str(value))
    except (ValueError, OverflowError, OSError):
        return None


def _folder_state(folder: Any) -> str:
    if folder.online:
        return "online"
    since = _offline_since(folder)
    if since is None:
        return "OFFLINE"
    return f"OFFLINE since {since:%Y-%m-%d %H:%M}, {_age(datetime.now() - since)}"


def _age(delta: Any) -> str:
    days = delta.days
    if days >= 2:
        return f"{days} days"
    hours = int(delta.total_seconds() // 3600)
    if hours >= 1:
        return f"{hours} h"
    return f"{max(0, int(delta.total_seconds() // 60))} min"


def cmd_folders(args: argparse.Namespace) -> int:
    lib = _open(args, write=False)
    try:
        folders = lib.folders()
        if args.json:
            out = []
            for f in folders:
                since = _offline_since(f)
                out.append({
                    "path": f.path,
                    "online": f.online,
                    "photo_count": f.photo_count,
                    "offline_since": since.isoformat(timespec="seconds") if since else None,
                })
            _print_json(out)
        elif not folders:
            _print("no folders yet; add one with: photosearch index FOLDER")
        else:
            for f in folders:
                _print(f"{f.path} [{_folder_state(f)}] {f.photo_count} photos")
    finally:
        lib.close()
    return 0


def cmd_remove_folder(args: argparse.Namespace) -> int:
    lib = _open(args, write=True)
    try:
        target = str(Path(args.folder).expanduser().resolve())
        known = {f.path: f for f in lib.folders()}
        if target not in known:
            listed = ", ".join(known) if known else "none"
            raise FolderNotFoundError(
                f"folder is not in the library: {target} (library folders: {listed})"
            )
        lib.remove_folder(target)
        _print(
            f"removed {target} from the library ({known[target].photo_count} photos "
            "forgotten; the files themselves are untouched)"
        )
    finally:
        lib.close()
    return 0


# -- wiring ------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--library", metavar="DIR", help=f"library folder (default: {default_library_dir()})"
    )
    common.add_argument("--model", metavar="CKPT", help="model checkpoint (default: shipped model)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="machine-readable output")
    top_k = argparse.ArgumentParser(add_help=False)
    top_k.add_argument(
        "--top-k", type=int, default=20, metavar="N", help="results (default 20)"
    )
    rerank = argparse.ArgumentParser(add_help=False)
    rerank.add_argument(
        "--rerank", action="store_const", const=True, default=None,
        help="attention re-ranking of the top 100 (off by default, or $PHOTOSEARCH_RERANK=1; "
        "index and watch then store each new photo's region codes; docs/MODEL.md)",
    )

    p = subparsers.add_parser(
        "index", parents=[common, as_json, rerank], help="add folders and index their photos"
    )
    p.add_argument("folders", nargs="*", metavar="FOLDER", help="folders to add (default: known ones)")
    p.add_argument(
        "--reembed", action="store_true", help="re-embed every photo with the current model"
    )
    p.set_defaults(func=cmd_index)

    p = subparsers.add_parser(
        "search", parents=[common, as_json, top_k, rerank], help="search by text",
        description='Query syntax: plain words and "quoted phrases" describe the photo; '
        "-word ranks away from it, +word adds a concept. Quote the whole query as one "
        "argument: photosearch search 'dog beach -people'.",
    )
    p.add_argument(
        "query", nargs="?", default="",
        help='what the photo shows, e.g. "a dog running on a beach", "dog -grass", '
        '\'"red car" +night\'',
    )
    p.add_argument(
        "--like", metavar="PHOTO",
        help='refine from an indexed photo: --like PHOTO "at night" (the query may be empty)',
    )
    p.add_argument(
        "--sort", choices=("relevance", "date"), default="relevance",
        help="order of the confident matches (default relevance; date: newest first)",
    )
    p.add_argument("--folder", help="only photos under this folder")
    p.add_argument(
        "--from", dest="date_from", type=_parse_date, metavar="DATE",
        help="only photos taken on or after DATE (YYYY-MM-DD)",
    )
    p.add_argument(
        "--to", dest="date_to", type=_parse_end_date, metavar="DATE",
        help="only photos taken on or before DATE (YYYY-MM-DD, the whole day)",
    )
    p.set_defaults(func=cmd_search)

    p = subparsers.add_parser("similar", parents=[common, as_json, top_k], help="photos like PHOTO")
    p.add_argument("photo", metavar="PHOTO")
    p.set_defaults(func=cmd_similar)

    p = subparsers.add_parser(
        "captions", parents=[common, as_json, rerank], help="captions that describe PHOTO"
    )
    p.add_argument("photo", metavar="PHOTO")
    p.add_argument("--top-k", type=int, default=10, metavar="N")
    p.set_defaults(func=cmd_captions)

    p = subparsers.add_parser(
        "duplicates", parents=[common, as_json],
        help="groups of near-identical photos (bursts, edited copies, resized exports)",
    )
    p.set_defaults(func=cmd_duplicates)

    p = subparsers.add_parser("watch", parents=[common, rerank], help="keep the library up to date")
    p.set_defaults(func=cmd_watch)

    p = subparsers.add_parser("status", parents=[common, as_json], help="library summary")
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser(
        "folders", parents=[common, as_json], help="the library's folders and their state"
    )
    p.set_defaults(func=cmd_folders)

    p = subparsers.add_parser(
        "repair", parents=[common, as_json],
        help="rebuild a lost or damaged catalog.db and re-index its folders",
        description="Rebuild a lost or damaged catalog.db: the damaged file is kept beside it "
        "(catalog.db.damaged-TIME), the folder list comes from it where readable, else from the "
        "folders.json backup, stored vectors are salvaged, and the folders are indexed again. "
        "A healthy catalog is left alone.",
    )
    p.set_defaults(func=cmd_repair)

    p = subparsers.add_parser(
        "remove-folder", parents=[common],
        help="forget a folder and its photos (the files are not touched)",
    )
    p.add_argument("folder", metavar="FOLDER")
    p.set_defaults(func=cmd_remove_folder)
