"""`python -m bot ...`: the commands a shop's team runs.

setup                 migrate, add built-in carriers, seed demo data when the store is empty
migrate               bring the schema up to date
seed-demo             replace the demo orders with a fresh set for today
demo-orders [--json]  one order per demo scenario, to try each conversation
eta-backtest [--low 0.1 --high 0.9] [--split time|loo] [--json]
                      how often the delivery day fell inside the estimate's range
simulate-feed [--order WS-1003] [--interval 3]
                      send the running assistant a signed day of AfterShip events for the demo orders
import orders FILE    orders and shipments from CSV or JSON
import events FILE    carrier tracking events from CSV or JSON
check-settings        validate .env and the environment
run                   start the action server, the Rasa server and the agent console
shell                 chat in the terminal (starts the action server too)
console               start the agent console alone (CONSOLE_PORT)
create-agent USERNAME --name "Display Name" [--password-stdin]
add an agent who can log in to the console
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

from bot.config import Settings, SettingsError, get_settings
from bot.domain.clock import utcnow


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from bot.store import db

    db.migrate()
    print(f"Store schema is up to date ({_safe_url(settings.database_url)}).")
    return 0


#: Secrets setup writes to .env when neither the environment nor .env has a usable one.
GENERATED_SECRETS = ("RASA_AUTH_TOKEN", "ACTION_SERVER_TOKEN")
#: The tracking feed's secret, so `simulate-feed` works on a new machine; a shop using AfterShip sets AfterShip's.
FEED_SECRETS = ("AFTERSHIP_WEBHOOK_SECRET",)


def ensure_secrets(env_file: Path, environ: Optional[Dict[str, str]] = None) -> List[str]:
    """Write a random value for each missing or placeholder secret to `env_file`; returns the names written.

    A value set in the process environment is left alone (it wins over .env
    anyway); the file is created readable by its owner only.
    """
    import os
    import secrets

    from dotenv import dotenv_values, set_key

    from bot.config import weak_secret

    environ = dict(os.environ) if environ is None else environ
    existing = dotenv_values(env_file) if env_file.is_file() else {}
    written = []
    for name in GENERATED_SECRETS:
        if environ.get(name, "").strip():
            continue
        if not weak_secret(existing.get(name) or ""):
            continue
        if not env_file.exists():
            env_file.touch(mode=0o600)
        set_key(str(env_file), name, secrets.token_urlsafe(32), quote_mode="never")
        written.append(name)
    for name in FEED_SECRETS:
        # Written only when the name is nowhere: an empty value set on purpose keeps the feed off.
        if name in environ or name in existing:
            continue
        if not env_file.exists():
            env_file.touch(mode=0o600)
        set_key(str(env_file), name, secrets.token_urlsafe(32), quote_mode="never")
        written.append(name)
    return written


def cmd_setup(settings: Settings, args: argparse.Namespace) -> int:
    from bot.config import PROJECT_ROOT
    from bot.store import db
    from bot.store.demo import demo_is_stale, seed_demo
    from bot.store.queries import count_orders, sync_carriers

    written = ensure_secrets(PROJECT_ROOT / ".env")
    if written:
        print(f"Wrote new random {' and '.join(written)} to .env.")
    db.migrate()
    now = utcnow()
    with db.session_scope() as session:
        added = sync_carriers(session=session)
        total = count_orders(session=session)
        demo = count_orders(session=session, source="demo")
        if args.demo == "never":
            action = "left as it is"
        elif total == 0 or args.demo == "always":
            action = f"seeded with {seed_demo(session=session, settings=settings, now=now)} demo orders"
        elif demo and demo_is_stale(session=session, settings=settings, now=now):
            action = f"demo orders refreshed for today ({seed_demo(session=session, settings=settings, now=now)})"
        else:
            action = f"has {total} orders, left as they are"
    print(f"Store ready at {_safe_url(settings.database_url)}: {added} carrier rows added; {action}.")
    return 0


def cmd_seed_demo(settings: Settings, _args: argparse.Namespace) -> int:
    from bot.store import db
    from bot.store.demo import seed_demo

    db.migrate()
    with db.session_scope() as session:
        count = seed_demo(session=session, settings=settings, now=utcnow())
    print(f"Seeded {count} demo orders (imported orders are untouched).")
    return 0


def cmd_demo_orders(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from bot.store import db
    from bot.store.demo import showcase

    with db.session_factory()() as session:
        try:
            rows = showcase(session=session, settings=settings, now=utcnow())
        except LookupError as exc:
            print(str(exc), file=sys.stderr)
            return 1
        except SQLAlchemyError as exc:
            print(f"The store at {_safe_url(settings.database_url)} cannot list demo orders "
                  f"({exc.__class__.__name__}); run `python -m bot setup` first, with the same DATABASE_URL.",
                  file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    print(f"{'scenario':<27} {'order':<8} {'email':<32} {'postcode':<9} {'status':<22} promised")
    for row in rows:
        print(f"{row['scenario']:<27} {row['order_number']:<8} {row['email']:<32} {row['postcode']:<9} "
              f"{row['status']:<22} {row['promised_date']}")
    return 0


def _share(value: Optional[float]) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _width(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f} days"


def cmd_eta_backtest(settings: Settings, args: argparse.Namespace) -> int:
    """Replay the store's delivered shipments: the share of estimates whose range held the delivery day."""
    from sqlalchemy.exc import SQLAlchemyError

    from bot.services.eta import backtest
    from bot.store import db

    if not 0 <= args.low <= args.high <= 1:
        print(f"--low and --high are percentiles between 0 and 1, low first (got {args.low} and {args.high}).",
              file=sys.stderr)
        return 2
    with db.session_factory()() as session:
        try:
            result = backtest(session=session, settings=settings, low=args.low, high=args.high,
                              min_samples=args.min_samples, business_days=not args.calendar_days,
                              split=args.split)
        except SQLAlchemyError as exc:
            print(f"The store at {_safe_url(settings.database_url)} cannot be read "
                  f"({exc.__class__.__name__}); run `python -m bot setup` first, with the same DATABASE_URL.",
                  file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return 0
    learnt = ("only from parcels delivered before the scan" if result.split == "time"
              else "from every other delivered parcel")
    print(f"Delivery estimates replayed on {result.shipments} delivered shipments: after each scan, the "
          f"{result.low * 100:g}th-{result.high * 100:g}th percentile range learnt {learnt} "
          f"({'weekdays' if result.business_days else 'calendar days'}).")
    if not result.overall.predictions:
        print(f"No estimate could be made: a carrier and status needs {result.min_samples} delivered parcels "
              "to learn from.")
        return 0
    print(f"{'':<24} {'predictions':>11} {'inside':>7} {'coverage':>9} {'mean width':>11}")
    rows = [("all", result.overall), *[(f"carrier {code}", tally) for code, tally in sorted(result.carriers.items())],
            *[(f"after {status}", tally) for status, tally in sorted(result.statuses.items())]]
    for name, tally in rows:
        print(f"{name:<24} {tally.predictions:>11} {tally.inside:>7} {_share(tally.coverage):>9} "
              f"{_width(tally.mean_width):>11}")
    print(f"The delivery day fell inside the range for {_share(result.overall.coverage)} of "
          f"{result.overall.predictions} predictions; {result.unpredicted} scans had too little history "
          f"(fewer than {result.min_samples} deliveries) for one.")
    return 0


def cmd_simulate_feed(settings: Settings, args: argparse.Namespace) -> int:
    """Post a signed day of AfterShip-format webhooks for the demo orders to the running assistant."""
    import time

    import httpx

    from bot.domain.updates import in_quiet_hours, parse_quiet_hours
    from bot.services.simulation import covered, headers, plan
    from bot.store import db

    if not settings.aftership_webhook_secret:
        print("AFTERSHIP_WEBHOOK_SECRET is not set, so the assistant has no AfterShip endpoint: run "
              "`python -m bot setup` (it writes one to .env) and restart the assistant.", file=sys.stderr)
        return 2
    url = (args.url or settings.rasa_api_url).rstrip("/") + "/webhooks/aftership/webhook"
    with db.session_scope() as session:
        day = plan(session=session, settings=settings, now=utcnow(), only=tuple(args.order or ()))
        orders = covered(session=session, settings=settings, now=utcnow())
    if not day:
        if args.order and orders:
            print(f"The simulated day has no events for {', '.join(args.order)}; it covers the demo orders "
                  f"{', '.join(orders)} (while their parcels are still on their way).", file=sys.stderr)
        else:
            print("No demo order has a parcel on its way: run `python -m bot seed-demo` first.", file=sys.stderr)
        return 1
    quiet = parse_quiet_hours(settings.notify_quiet_hours)
    if quiet and in_quiet_hours(utcnow().astimezone(settings.tz).time(), quiet):
        print(f"Quiet hours now ({settings.notify_quiet_hours} {settings.shop_timezone}): subscribed shoppers get "
              "these updates when they end. NOTIFY_QUIET_HOURS= (empty) turns them off.")
    failed = 0
    for index, event in enumerate(day):
        if index and args.interval > 0:
            time.sleep(args.interval)
        try:
            answer = httpx.post(url, content=event.body, headers=headers(settings.aftership_webhook_secret, event.body),
                                timeout=30)
        except httpx.HTTPError as exc:
            print(f"Cannot reach the assistant at {url} ({exc}); is `make run` running?", file=sys.stderr)
            return 1
        outcome = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
        if answer.status_code != 200:
            failed += 1
            print(f"{event.order_number:<10} {event.what}: refused ({answer.status_code} {outcome.get('error', '')})")
            continue
        queued = outcome.get("updates_queued", 0)
        if outcome.get("duplicate"):
            print(f"{event.order_number:<10} {event.what}: sent before today, nothing changed")
            continue
        print(f"{event.order_number:<10} {event.what}: stored {outcome.get('events_stored', 0)} event(s), "
              f"{queued} update(s) queued for subscribed shoppers")
    return 1 if failed else 0


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from bot.store import db
    from bot.store.importer import ImportFailed, import_events, import_orders

    path = Path(args.file)
    if not path.is_file():
        print(f"{path}: no such file", file=sys.stderr)
        return 2
    try:
        with db.session_scope() as session:
            if args.kind == "orders":
                report = import_orders(session=session, path=path, settings=settings)
            else:
                report = import_events(session=session, path=path, settings=settings)
    except ImportFailed as exc:
        print("Nothing was imported; fix these and try again:\n" + "\n".join(f"  {p}" for p in exc.problems),
              file=sys.stderr)
        return 1
    print(f"Imported {path.name}: {report.summary()}.")
    return 0


def cmd_check_settings(settings: Settings, _args: argparse.Namespace) -> int:
    """Valid settings exit 0; in production, anything unsafe is listed and exits 1."""
    print(f"Settings are valid ({settings.env}); store at {_safe_url(settings.database_url)}.")
    unsafe = settings.unsafe_for_production()
    if unsafe:
        heading = "Unsafe for production:" if settings.env == "production" else "Before going to production, fix:"
        print(heading + "\n" + "\n".join(f"  - {line}" for line in unsafe))
    return 1 if settings.env == "production" and unsafe else 0


def _start(settings: Settings, what: str) -> int:
    from bot.serving import runner

    try:
        return getattr(runner, what)(settings)
    except runner.StartupError as exc:
        print(str(exc), file=sys.stderr)
        return 1


def cmd_run(settings: Settings, _args: argparse.Namespace) -> int:
    return _start(settings, "serve")


def cmd_shell(settings: Settings, _args: argparse.Namespace) -> int:
    return _start(settings, "shell")


def cmd_console(settings: Settings, _args: argparse.Namespace) -> int:
    from bot.console.app import serve
    from bot.serving.runner import StartupError

    try:
        return serve(settings)
    except StartupError as exc:
        print(str(exc), file=sys.stderr)
        return 1


def _new_password(username: str, from_stdin: bool) -> Optional[str]:
    """The new agent's password, typed twice at a hidden prompt or piped in; None after a message why not."""
    from bot.console.accounts import AgentError, check_new_password

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            print("There is no terminal to ask for the password on; pipe it in with --password-stdin.",
                  file=sys.stderr)
            return None
        password = getpass.getpass(f"Password for {username}: ")
    try:
        check_new_password(password)
    except AgentError as exc:
        print(f"{exc} Nothing was created.", file=sys.stderr)
        return None
    if not from_stdin and getpass.getpass("The same password again: ") != password:
        print("The two passwords differ. Nothing was created.", file=sys.stderr)
        return None
    return password


def cmd_create_agent(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import IntegrityError, SQLAlchemyError

    from bot.console.accounts import AgentError, create_agent, normalise_username
    from bot.store import db

    username = normalise_username(args.username)
    password = _new_password(username, args.password_stdin)
    if password is None:
        return 1
    try:
        with db.session_scope() as session:
            agent = create_agent(session=session, username=username, display_name=args.name or username,
                                 password=password, now=utcnow())
            shown = f"{agent.username} ({agent.display_name})"
    except AgentError as exc:
        print(f"{exc} Nothing was created.", file=sys.stderr)
        return 1
    except IntegrityError:
        print(f"An agent called {username!r} already exists. Nothing was created.", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(f"The store at {_safe_url(settings.database_url)} cannot take agents yet "
              f"({exc.__class__.__name__}); run `python -m bot setup` first.", file=sys.stderr)
        return 1
    host = "localhost" if settings.rasa_host in ("127.0.0.1", "0.0.0.0") else settings.rasa_host
    print(f"Agent {shown} created. They log in at http://{host}:{settings.console_port}/login")
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m bot", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = root.add_subparsers(dest="command", required=True)
    setup = sub.add_parser("setup", help="migrate, add carriers, seed demo data when empty")
    setup.add_argument("--demo", choices=("auto", "always", "never"), default="auto",
                       help="auto: seed when the store is empty and refresh stale demo orders (default)")
    setup.set_defaults(func=cmd_setup)
    sub.add_parser("migrate", help="bring the schema up to date").set_defaults(func=cmd_migrate)
    sub.add_parser("seed-demo", help="replace the demo orders for today").set_defaults(func=cmd_seed_demo)
    demo = sub.add_parser("demo-orders", help="one order per demo scenario")
    demo.add_argument("--json", action="store_true", help="print JSON")
    demo.set_defaults(func=cmd_demo_orders)
    eta = sub.add_parser("eta-backtest", help="how often delivered parcels arrived inside the estimated range")
    eta.add_argument("--low", type=float, default=0.1, help="the range's lower percentile (default 0.1)")
    eta.add_argument("--high", type=float, default=0.9, help="the range's upper percentile (default 0.9)")
    eta.add_argument("--split", choices=("time", "loo"), default="time",
                     help="time: learn only from parcels delivered before each scan (default); "
                          "loo: from every other delivered parcel")
    eta.add_argument("--min-samples", type=int, default=10,
                     help="deliveries a carrier and status need before a range is given (default 10)")
    eta.add_argument("--calendar-days", action="store_true", help="count calendar days instead of weekdays")
    eta.add_argument("--json", action="store_true", help="print JSON")
    eta.set_defaults(func=cmd_eta_backtest)
    feed = sub.add_parser("simulate-feed", help="send the running assistant a signed day of AfterShip events")
    feed.add_argument("--url", help="the assistant (default: this machine's, RASA_PORT)")
    feed.add_argument("--order", action="append", help="only this demo order (repeatable)")
    feed.add_argument("--interval", type=float, default=3.0, help="seconds between events (default 3)")
    feed.set_defaults(func=cmd_simulate_feed)
    imp = sub.add_parser("import", help="import orders or carrier events from CSV or JSON")
    imp.add_argument("kind", choices=("orders", "events"))
    imp.add_argument("file")
    imp.set_defaults(func=cmd_import)
    sub.add_parser("check-settings", help="validate settings").set_defaults(func=cmd_check_settings)
    sub.add_parser("run", help="start the assistant").set_defaults(func=cmd_run)
    sub.add_parser("shell", help="chat with the assistant in the terminal").set_defaults(func=cmd_shell)
    sub.add_parser("console", help="start the agent console alone").set_defaults(func=cmd_console)
    agent = sub.add_parser("create-agent", help="add an agent who can log in to the console")
    agent.add_argument("username", help="what they log in with (letters, digits, '.', '-', '_')")
    agent.add_argument("--name", help="the name colleagues see (default: the username)")
    agent.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of standard input instead of a prompt")
    agent.set_defaults(func=cmd_create_agent)
    return root


def main(argv: Optional[List[str]] = None) -> int:
    from bot.domain import redaction

    redaction.install()  # the runner's and the console's log lines are masked like the servers'
    args = parser().parse_args(argv)
    try:
        settings = get_settings()
    except SettingsError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return int(args.func(settings, args))
