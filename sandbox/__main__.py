"""CLI: python -m sandbox up --hosts N | down | status | reset."""

from __future__ import annotations

import argparse
import sys

from sandbox.errors import SandboxError
from sandbox.fleet import SCALE_ABOVE, Sandbox


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--dir", help="sandbox directory (default $TARS_SANDBOX_DIR or <repo>/.sandbox)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the fleet (idempotent)")
    up.add_argument("--hosts", type=int, default=None, help="number of hosts (default 10)")
    up.add_argument("--first-address", type=int, default=11,
                    help="first host is 127.0.0.<this> (scale mode: hosts in 127.<this>.0.0/16)")
    up.add_argument("--ssh-port", type=int, default=2222)
    up.add_argument("--app-port", type=int, default=18080)
    up.add_argument("--scale", action=argparse.BooleanOptionalAction, default=None,
                    help=f"scale mode: one app process for every host (default: above {SCALE_ABOVE} hosts)")
    for name, text in (("down", "stop every sandbox process"), ("status", "show hosts and processes"),
                       ("reset", "return every host to the 1.0.0 baseline")):
        sub.add_parser(name, help=text)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        if args.command == "up":
            sb = Sandbox(args.dir, first_address=args.first_address, ssh_port=args.ssh_port,
                         app_port=args.app_port, scale=args.scale)
            if sb.is_up() and args.hosts in (None, sb.settings.hosts):
                print("already up")
            else:
                elapsed = sb.up(hosts=args.hosts or 10)
                mode = " (scale mode)" if sb.settings.scale else ""
                print(f"up: {sb.settings.hosts} hosts{mode} in {elapsed:.2f}s")
                print(f"inventory: {sb.inventory_path}\nconnection: source {sb.layout.env}")
            print(sb.status().render())
        elif args.command == "down":
            sb = Sandbox(args.dir)
            survivors = sb.down()
            if survivors:
                print("still running: " + ", ".join(survivors), file=sys.stderr)
                return 1
            print(f"down: {sb.dir}")
        elif args.command == "status":
            sb = Sandbox.load(args.dir) if args.dir else Sandbox()
            print(sb.status().render())
            return 0 if sb.is_up() else 3
        elif args.command == "reset":
            sb = Sandbox.load(args.dir) if args.dir else Sandbox()
            sb.reset()
            print(sb.status().render())
    except SandboxError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
