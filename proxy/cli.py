"""consent-proxy's command line: run · check · demo.

Domain errors become one readable line each on stderr and exit status 1; never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from proxy import __version__, status_cli
from proxy.config import CONFIG_ENV, Settings, load_settings
from proxy.config.state import STATE_DIR_ENV
from proxy.errors import ConfigError
from proxy.ops.logs import setup_logging

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        return EXIT_OK
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="consent-proxy",
        description="Office 365 calendar and contacts consent for apps that already use SSO.",
    )
    parser.add_argument("--version", action="version", version=f"consent-proxy {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the proxy")
    run.add_argument("--config", type=Path, help=f"the config file (default: ${CONFIG_ENV})")
    run.add_argument("--host", help="address to listen on (default: listen.host)")
    run.add_argument("--port", type=int, help="port to listen on (default: listen.port)")
    run.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    run.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="log level (default: logging.level)",
    )
    _state_dir_option(run)
    run.set_defaults(handler=_run)

    check = commands.add_parser(
        "check", help="validate a config file (and the policy it names) and exit 0 (ok) or 1"
    )
    check.add_argument("config", type=Path, nargs="?", help="the config file")
    check.add_argument("--policy", type=Path, help="a policy file to validate on its own")
    check.add_argument(
        "--online", action="store_true", help="also check that the store (Redis) answers"
    )
    _state_dir_option(check)
    check.set_defaults(handler=_check)

    explain = commands.add_parser(
        "explain", help="show which policy rule applies to a user, and what it decides"
    )
    explain.add_argument("--policy", type=Path, help="the policy file (default: the config's)")
    explain.add_argument(
        "--config",
        type=Path,
        help="the proxy config: its policy, and the user's live state from its store",
    )
    explain.add_argument("--user", required=True, help="the user's email / UPN")
    explain.add_argument("--tenant", help="the user's Microsoft tenant id")
    explain.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an SSO attribute, repeatable (e.g. --attr groups=Sales)",
    )
    explain.add_argument("--json", action="store_true", help="machine-readable output")
    explain.set_defaults(handler=status_cli.explain)

    status = commands.add_parser(
        "status",
        help="Office 365 connections from the store the config names: every user by state "
        "and tenant, or one user",
    )
    status.add_argument("--config", type=Path, help=f"the config file (default: ${CONFIG_ENV})")
    status.add_argument("--user", help="one user: email / UPN, or the user key")
    output = status.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="machine-readable output")
    output.add_argument("--csv", action="store_true", help="one CSV row per user")
    _state_dir_option(status)
    status.set_defaults(handler=status_cli.status)

    keygen = commands.add_parser("keygen", help="print a new key for tokens.encryption_keys")
    keygen.set_defaults(handler=_keygen)

    demo = commands.add_parser(
        "demo", help="the whole journey offline: demo app, SSO IdP, Microsoft stand-in, proxy"
    )
    demo.add_argument("--port", type=int, default=8080, help="port for the proxy (default: 8080)")
    demo.add_argument(
        "--folder",
        type=Path,
        help="keep the demo's files (CA, keys, SQLite) here, not in a temp dir",
    )
    demo.add_argument(
        "--ops-port",
        type=int,
        default=9090,
        help="port for the ops listener: health, metrics, the admins' /overview "
        "(default: 9090; 0: none)",
    )
    demo.set_defaults(handler=_demo)
    return parser


def _state_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        help=f"the folder for state such as the SQLite store (default: ${STATE_DIR_ENV}, "
        "then the config's state_dir, then a per-platform folder)",
    )


def _run(args: argparse.Namespace) -> int:
    from proxy.server import serve

    if args.state_dir is not None:  # worker processes read the config anew: tell them too
        os.environ[STATE_DIR_ENV] = str(args.state_dir.resolve())
    settings = load_settings(args.config, args.state_dir)
    if args.workers < 1:
        print("--workers: must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    level = args.log_level or settings.logging.level
    setup_logging(level, settings.logging.format, settings.logging.users)
    if settings.policy is not None:
        _policy_for(settings)  # a broken policy stops the start, with its lines
    try:
        serve(
            settings.model_copy(
                update={"logging": settings.logging.model_copy(update={"level": level})}
            ),
            args.config,
            args.host or settings.listen.host,
            args.port or settings.listen.port,
            args.workers,
        )
    except SystemExit as exc:  # uvicorn exits on start-up failures (port in use...)
        return EXIT_PROBLEM if exc.code else EXIT_OK
    return EXIT_OK


def _policy_for(settings: Settings) -> None:
    from proxy.policy.findings import load_checked_policy

    assert settings.policy is not None
    load_checked_policy(settings.policy, settings.microsoft_apps)


def _check(args: argparse.Namespace) -> int:
    if args.config is None and args.policy is None:
        print("check: give a config file, --policy FILE, or both", file=sys.stderr)
        return EXIT_USAGE
    problems: list[str] = []
    passed: list[str] = []
    apps: list[str] | None = None
    policy_path = args.policy
    if args.config is not None:
        settings = load_settings(args.config, args.state_dir)
        apps = list(settings.microsoft_apps)
        policy_path = policy_path or settings.policy
        found = _deploy_problems(args.config, settings, args.online)
        problems += found
        passed += [] if found else [f"{args.config}: OK"]
    if policy_path is not None:
        found = _policy_problems(policy_path, apps)
        problems += found
        passed += [] if found else [f"{policy_path}: OK"]
    # "OK" only once everything is: an OK for the config above a broken policy misleads.
    if not problems:
        print("\n".join(passed))
    return EXIT_PROBLEM if problems else EXIT_OK


def _deploy_problems(path: Path, settings: Settings, online: bool) -> list[str]:
    """Prints what would fail at run (and the SSO warnings); returns the problems."""
    import asyncio

    from proxy.config import located, read_yaml_document
    from proxy.identity.sso.observed import observed_warnings, static_warnings
    from proxy.ops.preflight import preflight

    marks = read_yaml_document(path)[1]
    lines = located(ConfigError(preflight(settings, online), str(path)), marks).lines()
    for line in lines:
        print(line, file=sys.stderr)
    warnings = static_warnings(settings) + asyncio.run(observed_warnings(settings))
    _print_warnings(located(ConfigError(warnings, str(path)), marks))
    return lines


def _policy_problems(path: Path, apps: list[str] | None) -> list[str]:
    """Prints the policy's problems and warnings; returns the problems."""
    from proxy.config import located, read_yaml_document
    from proxy.policy.findings import check_apps, policy_warnings
    from proxy.policy.model import load_policy

    policy = load_policy(path)
    marks = read_yaml_document(path)[1]
    found = check_apps(policy, apps) if apps is not None else []
    problems = located(ConfigError(found, str(path)), marks).lines()
    for line in problems:
        print(line, file=sys.stderr)
    _print_warnings(located(ConfigError(policy_warnings(policy), str(path)), marks))
    return problems


def _print_warnings(warnings: ConfigError) -> None:
    for line in warnings.lines():
        source, _, rest = line.partition(": ")
        print(f"{source}: warning: {rest}", file=sys.stderr)


def _keygen(args: argparse.Namespace) -> int:
    from proxy.store.vault import new_key

    print(new_key())
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from proxy.demo.run import PortInUse, run_demo

    setup_logging("info", "auto")  # JSON when stderr is not a terminal, as with run
    try:
        run_demo(args.port, args.folder, args.ops_port)
    except PortInUse as exc:
        print(exc, file=sys.stderr)
        return EXIT_PROBLEM
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
