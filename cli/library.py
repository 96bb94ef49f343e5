"""Library commands: index, search, similar, captions, watch, status.

Every user error is raised as a `PhotosearchError`, which `cli.dispatch` prints as one line
(exit 2). The model is `--model CKPT`, else the shipped default (`engine.embedder.load_embedder`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.embedder import load_embedder
from engine.errors import (
    EmptyQueryError,
    FolderNotFoundError,
    LibraryLockedError,
    LibraryUnreadableError,
)
from engine.library import Library
from engine.settings import default_library_dir

log = logging.getLogger(__name__)

def _library_dir(args: argparse.Namespace) -> Path:
    return Path(args.library).expanduser() if args.library else default_library_dir()


def _open(args: argparse.Namespace, *, write: bool, reembed: bool = False) -> Library:
    library_dir = _library_dir(args)
    if not write and not (library_dir / "catalog.db").exists():
        raise LibraryUnreadableError(
            f"no library at {library_dir.absolute()}; create one with: photosearch index "
            f"--library {library_dir} FOLDER"
        )
    embedder = load_embedder(args.model)
    try:
        return Library.open(library_dir, embedder, reembed=reembed)
    except LibraryLockedError:
        if write:
            raise
        # Another process (app or `watch`) is writing: read beside it through WAL.
        return Library.open(library_dir, embedder, read_only=True)


def _print_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def _parse_date(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (use YYYY-MM-DD): {text}") from exc


# -- commands ----------------------------------------------------------------------------


def cmd_index(args: argparse.Namespace) -> int:
    folders = [Path(f).expanduser() for f in args.folders]
    for folder in folders:
        if not folder.is_dir():
            raise FolderNotFoundError(f"folder not found: {folder.absolute()}")
    lib = _open(args, write=True, reembed=args.reembed)
    try:
        for folder in folders:
            lib.add_folder(folder)
        if not lib.folders():
            raise FolderNotFoundError(
                "no folders to index; name at least one: photosearch index FOLDER"
            )
        bar = None
        progress = None
        if not args.json and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=0, unit="photo", file=sys.stderr, dynamic_ncols=True)

            def progress(p: Any) -> None:
                if bar.total != p.total:
                    bar.reset(total=p.total)
                bar.n = p.done
                bar.set_postfix_str(f"failed {p.failed}" if p.failed else "", refresh=False)
                bar.refresh()

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
            print(
                f"indexed {report.indexed}, unchanged {report.unchanged}, moved {report.moved}, "
                f"removed {report.removed}, offline {report.offline}, "
                f"failed {len(report.failed)}"
            )
            for path, reason in report.failed[:20]:
                print(f"  failed: {path}: {reason}")
            if len(report.failed) > 20:
                print(f"  ... and {len(report.failed) - 20} more (see: photosearch status)")
    finally:
        lib.close()
    return 0


def _require_query(text: str) -> str:
    if not text or not text.strip():
        raise EmptyQueryError("the search query is empty; describe what the photo shows")
    return text.strip()


def _print_hits(result: Any, as_json: bool) -> None:
    if as_json:
        _print_json([h.to_json() for h in result.hits])
        return
    if not result.hits:
        print("no photos found")
        return
    if result.weak:
        print(
            f"no good match (best score {result.best_score:.3f} < {result.threshold:.3f}); "
            "closest photos:"
        )
    print(f"{'score':>7}  path")
    for hit in result.hits:
        print(f"{hit.score:7.3f}  {hit.path}")


def cmd_search(args: argparse.Namespace) -> int:
    query = _require_query(args.query)
    lib = _open(args, write=False)
    try:
        result = lib.search_text(
            query, top_k=args.top_k, folder=args.folder, date_from=args.date_from,
            date_to=args.date_to,
        )
        _print_hits(result, args.json)
    finally:
        lib.close()
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
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
            print(
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
    lib = _open(args, write=False)
    try:
        lib.prepare_captions(progress=_caption_progress())
        hits = lib.similar_captions(args.photo, top_k=args.top_k)
        if args.json:
            _print_json([h.to_json() for h in hits])
        elif not hits:
            print("no captions to suggest yet (search a few times, or use a model with a caption bank)")
        else:
            for hit in hits:
                print(f"{hit.score:7.3f}  {hit.caption}")
    finally:
        lib.close()
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from engine.watcher import FolderWatcher

    lib = _open(args, write=True)
    try:
        report = lib.index()
        print(
            f"reconciled: indexed {report.indexed}, moved {report.moved}, removed "
            f"{report.removed}, offline {report.offline}, failed {len(report.failed)}",
            flush=True,
        )

        def on_change(paths: list[Path]) -> None:
            r = lib.index_paths(paths)
            if r.indexed or r.moved or r.removed or r.failed:
                print(
                    f"indexed {r.indexed}, moved {r.moved}, removed {r.removed}, "
                    f"failed {len(r.failed)}",
                    flush=True,
                )

        online = [Path(f.path) for f in lib.folders() if f.online]
        if not online:
            raise FolderNotFoundError("no folders to watch; add one with: photosearch index FOLDER")
        watcher = FolderWatcher(online, on_change)
        watcher.start()
        print(f"watching {len(online)} folder(s); press Ctrl-C to stop", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("stopped", flush=True)
        finally:
            watcher.stop()
    finally:
        lib.close()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    lib = _open(args, write=False)
    try:
        status = lib.status()
        if args.json:
            data = status.to_json()
            data["failed"] = [{"path": p, "reason": r} for p, r in lib.failures()]
            _print_json(data)
            return 0
        print(f"library:  {status.library_dir}")
        print(f"model:    {status.model_id}")
        print(f"photos:   {status.photo_count} ({status.offline_photos} offline)")
        for folder in status.folders:
            state = "online" if folder.online else "OFFLINE"
            print(f"folder:   {folder.path} [{state}] {folder.photo_count} photos")
        print(f"failures: {status.failures}")
        for path, reason in lib.failures()[:20]:
            print(f"  {path}: {reason}")
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
    top_k.add_argument("--top-k", type=int, default=20, metavar="N", help="results (default 20)")

    p = subparsers.add_parser(
        "index", parents=[common, as_json], help="add folders and index their photos"
    )
    p.add_argument("folders", nargs="*", metavar="FOLDER", help="folders to add (default: known ones)")
    p.add_argument(
        "--reembed", action="store_true", help="re-embed every photo with the current model"
    )
    p.set_defaults(func=cmd_index)

    p = subparsers.add_parser("search", parents=[common, as_json, top_k], help="search by text")
    p.add_argument("query", help='what the photo shows, e.g. "a dog running on a beach"')
    p.add_argument("--folder", help="only photos under this folder")
    p.add_argument("--from", dest="date_from", type=_parse_date, metavar="DATE")
    p.add_argument("--to", dest="date_to", type=_parse_date, metavar="DATE")
    p.set_defaults(func=cmd_search)

    p = subparsers.add_parser("similar", parents=[common, as_json, top_k], help="photos like PHOTO")
    p.add_argument("photo", metavar="PHOTO")
    p.set_defaults(func=cmd_similar)

    p = subparsers.add_parser(
        "captions", parents=[common, as_json], help="captions that describe PHOTO"
    )
    p.add_argument("photo", metavar="PHOTO")
    p.add_argument("--top-k", type=int, default=10, metavar="N")
    p.set_defaults(func=cmd_captions)

    p = subparsers.add_parser("watch", parents=[common], help="keep the library up to date")
    p.set_defaults(func=cmd_watch)

    p = subparsers.add_parser("status", parents=[common, as_json], help="library summary")
    p.set_defaults(func=cmd_status)
