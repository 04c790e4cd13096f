"""``otrain label``: label and vet candidates in the browser, with active learning.

Serves a page on 127.0.0.1:8765 (prints the URL); every key press is stored in a SQLite
database. ``--export labels.csv`` writes the labels for ``otrain-convert --labels`` (no server).
"""

from __future__ import annotations

import argparse
import getpass
import re
import secrets
import sys
import threading
import webbrowser
from pathlib import Path

from otrain.errors import OtrainError
from otrain.label.ranking import ORDERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``otrain label``."""
    src = parser.add_argument_group("input (one of)")
    src.add_argument("--cutouts", default=None, metavar="FOLDER",
                     help="folder of FITS cutouts (its true/ and false/ sub-folders too)")
    src.add_argument("--cube", default=None, metavar="H5", help="a datacube (.h5 or .npz)")
    src.add_argument("--alerts", default=None, nargs="+", metavar="PATH",
                     help="alert files or folders (.avro, .parquet)")
    parser.add_argument("--channels", default=None,
                        help="channels to show, from diff,sci,ref (default: all the input has; "
                             "alerts: diff,sci,ref)")
    parser.add_argument("--model", default=None,
                        help="model file (.safetensors): P(real) for ordering (and, with "
                             "--show-scores, for display)")
    parser.add_argument("--order", choices=ORDERS, default=None,
                        help="queue order (default: uncertainty with --model, else file)")
    parser.add_argument("--mc-samples", type=int, default=10,
                        help="MC-dropout passes of the model for bald/disagreement (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --order random and of "
                        "the MC-dropout masks (default 0)")
    parser.add_argument("--show-scores", action="store_true",
                        help="show the model's P(real) and spread on the page (hidden by "
                             "default: it biases labellers)")
    parser.add_argument("--db", default=None,
                        help="label database (default: labels.sqlite in a cutout folder, "
                             "<name>.labels.sqlite beside a cube or alert file)")
    parser.add_argument("--labeller", default=None,
                        help="name recorded with every label (default: your login name); "
                             "with --export, only this labeller's labels")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; any other needs a token)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    parser.add_argument("--token", default=None,
                        help="secret every request must carry (printed in the URL); made up "
                             "when --host is not local and none is given")
    parser.add_argument("--open", action="store_true", help="open the page in a browser")
    out = parser.add_argument_group("export (instead of serving)")
    out.add_argument("--export", default=None, metavar="CSV",
                     help="write candid,label,labeller,time (1 real, 0 bogus; unsure and "
                          "skip left out) for otrain-convert --labels, and exit")
    out.add_argument("--export-folders", default=None, metavar="DIR",
                     help="copy the labelled cutout files into DIR/true and DIR/false "
                          "(databases made from --cutouts), and exit")
    out.add_argument("--overwrite", action="store_true", help="replace existing export files")


def _inputs(args: argparse.Namespace) -> list[str]:
    given = [name for name in ("cutouts", "cube", "alerts") if getattr(args, name)]
    if len(given) > 1:
        raise OtrainError("give one of --cutouts, --cube, --alerts")
    return given


def _login_name() -> str:
    try:
        return getpass.getuser() or "labeller"
    except (OSError, KeyError):  # no login name in some containers
        return "labeller"


def default_db(args: argparse.Namespace) -> Path:
    """The database path: ``--db``, or beside the input."""
    if args.db:
        return Path(args.db)
    if args.cutouts:
        return Path(args.cutouts) / "labels.sqlite"
    first = Path(args.cube or args.alerts[0])
    if first.is_dir():
        return first / "labels.sqlite"
    return first.with_name(f"{first.name.split('.')[0]}.labels.sqlite")


def _export(args: argparse.Namespace) -> int:
    from otrain.label.export import export_csv, export_folders
    from otrain.label.store import LabelStore

    db = default_db(args)
    if not db.is_file():
        raise OtrainError("no such label database", db)
    with LabelStore(db) as store:
        if args.export:
            n = export_csv(store, args.export, args.labeller, args.overwrite)
            if not args.quiet:
                print(f"{n} labels (real/bogus) written to {args.export}")
        if args.export_folders:
            counts = export_folders(store, args.export_folders, args.labeller, args.overwrite)
            if not args.quiet:
                print(f"{counts['true']} cutouts copied to {args.export_folders}/true, "
                      f"{counts['false']} to {args.export_folders}/false")
    return 0


def _load_pool(args: argparse.Namespace):
    from otrain.cutouts.reading import parse_channels
    from otrain.label import pool

    channels = parse_channels(args.channels) if args.channels else None
    if args.cutouts:
        return pool.from_cutouts(args.cutouts, channels)
    if args.cube:
        return pool.from_cube(args.cube)
    return pool.from_alerts(args.alerts, channels, quiet=args.quiet)


def _draws(args: argparse.Namespace, the_pool):
    import numpy as np

    from otrain.label.pool import model_images
    from otrain.label.ranking import draws_from_model
    from otrain.models.modelfile import load_model
    from otrain.progress import track

    loaded = load_model(args.model)
    n = len(the_pool)
    parts = []
    starts = range(0, n, 256)
    for start in track(starts, len(starts), "scoring", args.quiet):
        idx = np.arange(start, min(start + 256, n))
        images = model_images(the_pool, idx, loaded.channels, loaded.input_size)
        parts.append(draws_from_model(loaded, images, args.mc_samples, args.seed + start))
    return np.concatenate(parts)


def resolve_token(host: str, token: str | None) -> str | None:
    """The token to require: ``token`` (checked), a random one for a non-local ``host``, or
    None (loopback without ``--token``)."""
    from otrain.label.server import is_local

    if token is not None and not re.fullmatch(r"[A-Za-z0-9_\-]{16,128}", token):
        raise OtrainError("--token must be 16-128 characters of letters, digits, - and _")
    if token is None and not is_local(host):
        return secrets.token_urlsafe(24)
    return token


def run(args: argparse.Namespace) -> int:
    """Serve the page (or export) until interrupted."""
    given = _inputs(args)
    if args.export or args.export_folders:
        return _export(args)
    if not given:
        raise OtrainError("give the candidates: --cutouts FOLDER, --cube H5 or --alerts PATH")
    from otrain.label.server import create_app, is_local, require_server_packages, serve
    from otrain.label.session import LabelSession
    from otrain.label.store import LabelStore

    require_server_packages()
    if not 0 < args.port < 65536:
        raise OtrainError(f"--port must be 1-65535, got {args.port}")
    local = is_local(args.host)
    token = resolve_token(args.host, args.token)
    order = args.order or ("uncertainty" if args.model else "file")
    if order not in ("file", "random") and not args.model:
        raise OtrainError(f"--order {order} needs --model")
    labeller = args.labeller or _login_name()
    the_pool = _load_pool(args)
    draws = _draws(args, the_pool) if args.model else None
    db = default_db(args)
    store = LabelStore(db, writer=True)
    store.set_info(input=" ".join(str(p) for p in the_pool.inputs), kind=the_pool.kind,
                   last_order=order, last_model=str(args.model or ""))
    session = LabelSession(the_pool, store, labeller, order, draws, args.show_scores,
                           args.seed, str(args.model or ""))
    app = create_app(session, token, allowed_hosts=("127.0.0.1", "localhost", "::1", "[::1]")
                     if local and token is None else None)
    shown = "localhost" if args.host in ("0.0.0.0", "::") else args.host
    shown = f"[{shown}]" if ":" in shown else shown
    url = f"http://{shown}:{args.port}/" + (f"?token={token}" if token else "")
    if not args.quiet:
        for line in the_pool.skipped[:5]:
            print(f"skipped {line}", file=sys.stderr)
        st = session.state()
        print(f"otrain label: {len(the_pool)} candidates ({the_pool.kind}), "
              f"{st['labelled']} already labelled by {labeller}, order {order}, db {db}")
    print(f"otrain label: open {url}", flush=True)
    if args.open:
        threading.Timer(1.0, webbrowser.open, (url,)).start()
    try:
        serve(app, args.host, args.port)
    finally:
        store.close()
        the_pool.close()
    return 0
