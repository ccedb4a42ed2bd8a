"""Benchmark: load + validate N app configs of H hosts each (the DAG factory's parse-time work).

    .venv/bin/python bench/config_load.py [--apps 500] [--hosts 50] [--inventory] [--repeat 3]

Writes the configs to a temporary directory and times ``load_all`` three ways: cold (every file
parsed), as a new process with the on-disk parse cache warm (the DAG processor's usual case),
and again in the same process (shared files still in memory; app files are not kept there).
CPU time is the figure to compare (the wall clock depends on what else the machine runs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "plugins"))

from tars_operators.config import files  # noqa: E402
from tars_operators.config.loader import load_all  # noqa: E402

DEFAULTS = """\
ssh: {conn_id: tars_ssh, connect_timeout: 10}
traffic: {drain_timeout: 10, min_in_service: "25%"}
strategy: {fort: 1, batches: [1, "25%", "100%"], on_failure: rollback}
"""
APP = """\
app: {{name: app_{i:04d}, owner: team-{team}, description: benchmark app {i}}}
artifact:
  url: "http://127.0.0.1:8000/app_{i:04d}/app-{{{{ version }}}}.tar.gz"
  checksum: {{url: "{{{{ url }}}}.sha256"}}
  latest_url: "http://127.0.0.1:8000/app_{i:04d}/latest.txt"
hosts:
{hosts}
install:
  deploy_root: "/srv/{{{{ app.name }}}}"
service:
  start: "{{{{ deploy_root }}}}/current/bin/ctl start"
  stop: "{{{{ deploy_root }}}}/current/bin/ctl stop"
  status: "{{{{ deploy_root }}}}/current/bin/ctl status"
health:
  - {{kind: http, url: "http://{{{{ host.address }}}}:{{{{ vars.app_port }}}}/health", timeout: 30}}
smoke:
  - {{kind: http, url: "http://{{{{ host.address }}}}:{{{{ vars.app_port }}}}/", expect_body: "{{{{ version }}}}"}}
traffic:
  provider: haproxy
  haproxy: {{socket: /run/haproxy.sock, backend: app_{i:04d}}}
schedule:
  timezone: Europe/Amsterdam
  windows: [{{days: [mon, tue, wed, thu], start: "09:00", end: "17:00"}}]
"""


def host_lines(i: int, hosts: int) -> str:
    return "\n".join(
        f"  - {{name: app{i:04d}-h{h:02d}, address: 127.{i // 250}.{i % 250}.{h + 1},"
        f" group: dc{h % 2 + 1}, vars: {{app_port: 8080, rack: r{h % 5}}}}}"
        for h in range(hosts)
    )


def write(root: Path, apps: int, hosts: int, inventory: bool) -> Path:
    (root / "apps").mkdir(parents=True)
    (root / "defaults.yaml").write_text(DEFAULTS)
    for i in range(apps):
        if inventory:
            (root / "inv").mkdir(exist_ok=True)
            inv = root / "inv" / f"app_{i:04d}.yaml"
            inv.write_text("vars: {app_port: 8080}\nhosts:\n" + host_lines(i, hosts) + "\n")
            block = f"  inventory: ../inv/{inv.name}\n  groups: {{dc1: {{vars: {{dc: 1}}}}}}"
        else:
            block = "  list:\n" + host_lines(i, hosts).replace("  - ", "    - ")
        (root / "apps" / f"app_{i:04d}.yaml").write_text(
            APP.format(i=i, team=i % 7, hosts=block))
    return root / "apps"


def timed(apps_dir: Path, repeat: int, *, memory: bool, disk: str) -> tuple[float, float]:
    """Median (CPU seconds, wall seconds) of ``load_all``."""
    os.environ["TARS_CONFIG_CACHE_DIR"] = disk
    cpu, wall = [], []
    for _ in range(repeat):
        if not memory:
            files.clear_cache()
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        result = load_all(apps_dir)
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start_wall)
        assert not result.errors, next(iter(result.errors.values()))
    return statistics.median(cpu), statistics.median(wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=500)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--inventory", action="store_true", help="hosts in one inventory file per app")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        apps_dir = write(Path(tmp) / "configs", args.apps, args.hosts, args.inventory)
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*.yaml"))
        disk = str(Path(tmp) / "cache")
        figures = {
            "cold (parse every file)": timed(apps_dir, args.repeat, memory=False, disk="off"),
            "new process, disk cache warm": (
                timed(apps_dir, 1, memory=False, disk=disk) and
                timed(apps_dir, args.repeat, memory=False, disk=disk)),
            "same process again": timed(apps_dir, args.repeat, memory=True, disk=disk),
        }
    where = "inventory files" if args.inventory else "inline host lists"
    print(f"load_all: {args.apps} apps x {args.hosts} hosts ({where}, {size / 1e6:.1f} MB of YAML),"
          f" median of {args.repeat}")
    for name, (cpu, wall) in figures.items():
        print(f"  {name:<34} {cpu:6.3f} s CPU  {wall:6.3f} s wall  ({cpu / args.apps * 1e3:.2f} ms/app)")


if __name__ == "__main__":
    main()
