"""Parsing HAProxy runtime API answers (captured from HAProxy 2.6) and refusing unsafe names."""

from __future__ import annotations

import pytest

from tars_operators.errors import LoadBalancerError
from tars_operators.hooks.lb.runtime_api import (
    RuntimeAPI,
    backends_in_stat,
    check_name,
    no_such_proxy,
    parse_servers_state,
    parse_show_stat,
)

pytestmark = pytest.mark.unit

HEADER = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,"
    "wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,"
    "lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,"
    "hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,"
    "cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,"
    "rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,"
    "check_fall,check_health,"
)


def row(px: str, sv: str, scur: int, status: str, check: str, last_chk: str, desc: str) -> str:
    fields = [""] * 70
    fields[0], fields[1], fields[4], fields[17] = px, sv, str(scur), status
    fields[36], fields[56], fields[65] = check, last_chk, desc
    return ",".join(fields)


STAT = "\n".join([
    HEADER,
    "fe_demo,FRONTEND,,,0,0,9940,0,,,,,,,,,,OPEN",
    row("demo", "host01", 0, "UP", "L7OK", "", "Layer7 check passed"),
    row("demo", "host02", 3, "DRAIN", "L7OK", "", "Layer7 check passed"),
    row("demo", "host03", 0, "DOWN", "L4CON", "Connection refused", "Layer4 connection problem"),
    row("demo", "host04", 0, "MAINT", "", "", ""),
    row("demo", "host05", 1, "UP 1/2", "L7STS", "HTTP status check returned code <3C>503<3E>",
        "Layer7 wrong status"),
    "demo,BACKEND,0,0,4,4,,,,,,,,,,,,UP",
    "other,BACKEND,0,0,0,0,,,,,,,,,,,,UP",
    "",
])

SERVERS_STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 demo 1 host01 127.0.0.11 2 0 1 1 3 15 3 3 6 0 0 0 - 18080 - 0 0 - - 0
3 demo 2 host02 127.0.0.12 2 8 1 1 3 15 3 3 6 0 0 0 - 18080 - 0 0 - - 0
3 demo 3 host03 127.0.0.13 0 8 1 1 1 8 2 0 6 0 0 0 - 18080 - 0 0 - - 0
3 demo 4 host04 127.0.0.14 0 1 1 1 2 8 2 0 14 0 0 0 - 18080 - 0 0 - - 0
3 demo 5 host05 127.0.0.15 2 0 1 1 0 15 3 3 6 0 0 0 - 18080 - 0 0 - - 0
3 demo 6 host06 127.0.0.16 0 32 1 1 0 15 3 3 6 0 0 0 - 18080 - 0 0 - - 0

"""


def test_show_stat_rows_take_fields_by_header_name() -> None:
    rows = {r.server: r for r in parse_show_stat(STAT)}
    assert set(rows) == {"host01", "host02", "host03", "host04", "host05"}
    assert (rows["host02"].sessions, rows["host02"].status) == (3, "DRAIN")
    assert rows["host03"].check_status == "L4CON"
    assert rows["host03"].check_desc == "Layer4 connection problem: Connection refused"
    assert rows["host04"].check_desc == ""
    assert rows["host05"].status == "UP 1/2"


def test_show_stat_rows_of_one_backend_and_some_servers_only() -> None:
    other = STAT.replace("other,BACKEND", row("other", "host01", 9, "DOWN", "", "", "") + "\nother,BACKEND")
    assert [(r.backend, r.server) for r in parse_show_stat(other, "demo", {"host02", "host05"})] == [
        ("demo", "host02"), ("demo", "host05")]
    assert [r.sessions for r in parse_show_stat(other, "other")] == [9]
    assert parse_show_stat(other, "demo", {"host99"}) == []
    assert no_such_proxy("No such proxy.\n") and not no_such_proxy(STAT)


def test_one_server_of_a_big_backend_is_read_without_parsing_the_others() -> None:
    """A drain poll of one server of a 2,000-server backend: the lines not asked for are passed
    over by name, not parsed (a servers-state line with a bad admin field would raise)."""
    big = "\n".join([HEADER] + [row("demo", f"h{i:04d}", i % 3, "UP", "L7OK", "", "ok")
                               for i in range(2000)])
    rows = parse_show_stat(big, "demo", {"h1999"})
    assert [(r.server, r.status, r.sessions) for r in rows] == [("h1999", "UP", 1)]
    state = SERVERS_STATE.replace("host06 127.0.0.16 0 32", "host06 127.0.0.16 0 notanumber")
    assert parse_servers_state(state, {"host02"}) == {"host02": "drain"}


def test_backends_are_listed_from_summary_rows() -> None:
    assert backends_in_stat(STAT) == ["demo", "other"]


def test_show_stat_rejects_an_error_answer() -> None:
    with pytest.raises(LoadBalancerError, match="unexpected `show stat` answer: 'Permission denied'"):
        parse_show_stat("Permission denied\n")


def test_servers_state_admin_bits() -> None:
    assert parse_servers_state(SERVERS_STATE) == {
        "host01": "ready", "host02": "drain", "host03": "drain", "host04": "maint",
        "host05": "ready", "host06": "maint",
    }


def test_servers_state_rejects_unknown_backend_answer() -> None:
    with pytest.raises(LoadBalancerError, match="Can't find backend"):
        parse_servers_state("Can't find backend.\n")


@pytest.mark.parametrize("name", ["host01", "web-1.dc1", "10.0.0.1:8080", "a_b@c"])
def test_safe_names_pass(name: str) -> None:
    assert check_name("server", name) == name


@pytest.mark.parametrize("name", ["", "a b", "x;shutdown sessions server demo/host01", "a\nb",
                                  "$(reboot)", "a/b", "'q'"])
def test_names_that_would_change_the_command_are_refused(name: str) -> None:
    with pytest.raises(LoadBalancerError, match="invalid HAProxy server name"):
        check_name("server", name)


def test_exactly_one_endpoint() -> None:
    with pytest.raises(LoadBalancerError, match="exactly one of `socket` or `address`"):
        RuntimeAPI()
    with pytest.raises(LoadBalancerError):
        RuntimeAPI(socket_path="/a", address="127.0.0.1:9")


def test_missing_socket_is_named_in_the_error(tmp_path) -> None:
    api = RuntimeAPI(socket_path=str(tmp_path / "nope.sock"))
    with pytest.raises(LoadBalancerError) as err:
        api.ask("show stat")
    assert f"unix socket {tmp_path / 'nope.sock'}" in str(err.value)
    assert "No such file or directory" in str(err.value)


def test_refused_tcp_address_is_named_after_brief_retries() -> None:
    api = RuntimeAPI(address="127.0.0.1:1")
    with pytest.raises(LoadBalancerError, match=r"unreachable at TCP 127\.0\.0\.1:1: .*refused"):
        api.ask("show stat")


def test_remote_client_speaks_the_socket_and_reports_failure(tmp_path) -> None:
    """The python3 -c client used over SSH, run here through a local shell."""
    import socket
    import threading

    from tars_operators.hooks.lb.remote import local_runner

    path = str(tmp_path / "s.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(4)

    def answer() -> None:
        for _ in range(2):
            conn, _ = server.accept()
            with conn:
                cmd = conn.recv(1024).decode()
                conn.sendall(f"got {cmd.strip()}\n".encode())

    threading.Thread(target=answer, daemon=True).start()
    api = RuntimeAPI(socket_path=path, runner=local_runner, via="lb1")
    assert api.ask("show stat", "show servers state x") == ["got show stat\n", "got show servers state x\n"]
    server.close()
    gone = RuntimeAPI(socket_path=str(tmp_path / "gone.sock"), runner=local_runner, via="lb1")
    with pytest.raises(LoadBalancerError, match=r"unix socket .*gone\.sock on lb1 \(over SSH\): .*No such file"):
        gone.ask("show stat")
