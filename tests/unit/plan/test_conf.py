"""A run's conf against the DAG's form: unknown keys, raw versions, ramp overrides, the form's patterns."""

from __future__ import annotations

from pathlib import Path

import pytest

from tars_operators.errors import PlanError
from tars_operators.factory.builder import build_dag, build_rollback_dag
from tars_operators.plan.conf import check_run_conf, parse_batches
from tests.unit.factory.test_dag_shape import spec_for

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def dags(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    spec = spec_for(tmp_path_factory.mktemp("conf"), hosts=4)
    return {"deploy": build_dag(spec), "canary": build_dag(spec, canary=True),
            "rollback": build_rollback_dag(spec)}


def refusal(dag: object, conf: dict[str, object]) -> str:
    with pytest.raises(PlanError) as exc:
        check_run_conf(conf, dag.params.keys(), dag.dag_id)  # type: ignore[attr-defined]
    return str(exc.value)


def test_dryrun_is_refused_with_a_hint_and_every_known_key(dags: dict[str, object]) -> None:
    message = refusal(dags["deploy"], {"version": "2.0.0", "dryrun": True})
    assert message == (
        "conf: unknown key 'dryrun' (did you mean 'dry_run'?); tars_deploy__demo knows: "
        "batches, dry_run, force, force_reason, hosts, reason, skip_fort, skip_fort_reason, "
        "ticket, version")


def test_each_dag_knows_its_own_form(dags: dict[str, object]) -> None:
    # The canary has no scope params; the rollback has no version at all.
    assert "'hosts'" in refusal(dags["canary"], {"hosts": ["h01"]})
    assert "tars_canary__demo knows: dry_run, force, force_reason, reason, ticket, version" \
        in refusal(dags["canary"], {"hosts": ["h01"]})
    rollback = dags["rollback"]
    message = refusal(rollback, {"reason": "r", "dry_run": True, "hostz": []})
    assert message.startswith("conf: unknown keys 'dry_run', 'hostz' (did you mean 'hosts'?);")
    known = ", ".join(sorted(rollback.params.keys()))  # type: ignore[attr-defined]
    assert "skip_fort" not in known
    assert message.endswith(f"tars_rollback__demo knows: {known}")


@pytest.mark.parametrize("conf", [
    {}, None, {"version": "2.0.0", "dry_run": True, "batches": "1, 50%"},
    {"version": "latest"}, {"version": ""}, {"reason": "why"},
])
def test_good_confs_pass(dags: dict[str, object], conf: dict[str, object] | None) -> None:
    dag = dags["deploy"]
    check_run_conf(conf, dag.params.keys(), dag.dag_id)  # type: ignore[attr-defined]


@pytest.mark.parametrize("version", ["2.0.0\n", " 2.0.0", "2.0.0 ", "2.0.0\r", "\tlatest", 2])
def test_a_version_is_taken_as_given_not_trimmed(dags: dict[str, object], version: object) -> None:
    assert refusal(dags["deploy"], {"version": version}).startswith("params.version: version")


@pytest.mark.parametrize(("raw", "ramp"), [
    ("1, 25%, 100%", [1, "25%", "100%"]), ([2, "50%"], [2, "50%"]), ("", None), (None, None),
    ("007,050%", [7, "50%"]),
])
def test_batches_parse(raw: object, ramp: object) -> None:
    assert parse_batches(raw) == ramp


@pytest.mark.parametrize("raw", ["0%,50%", "0", "101%", "1,,2", "-1", "²", "١", "1.5", "10000",
                                 "25 %", [True], "50%%"])
def test_batches_that_prepare_refuses(raw: object) -> None:
    with pytest.raises(PlanError, match=r"^params\.batches: expected sizes like 1, 25%, 100%"):
        parse_batches(raw)


SAMPLES = ["1, 25%, 100%", "0%,50%", "0", "101%", "1,,2", "", " ", "10000", "0050%", "2,50%\n",
           "1.5", "25 %", "100%,", "9999", "²", "1;2"]


@pytest.mark.parametrize("raw", SAMPLES)
def test_the_forms_batches_pattern_takes_what_prepare_takes(dags: dict[str, object],
                                                             raw: str) -> None:
    from airflow.sdk.definitions.param import ParamValidationError

    param = dags["deploy"].params.get_param("batches")  # type: ignore[attr-defined]
    try:
        parse_batches(raw)
        prepare_takes = True
    except PlanError:
        prepare_takes = False
    try:
        param.resolve(raw)
        form_takes = True
    except ParamValidationError:
        form_takes = False
    assert form_takes == prepare_takes


@pytest.mark.parametrize(("key", "value"), [
    ("version", "2.0.0\n"), ("version", "latest\n"), ("version", "2.0.0 "), ("ticket", "OPS-1\n"),
])
def test_the_form_refuses_a_trailing_newline(dags: dict[str, object], key: str, value: str) -> None:
    """JSON Schema patterns search: ``^…$`` alone lets ``"2.0.0\\n"`` through ``re.search``."""
    from airflow.sdk.definitions.param import ParamValidationError

    params = dags["canary"].params  # type: ignore[attr-defined]
    param = params.get_param(key)
    param.resolve("2.0.0" if key == "version" else "OPS-1")  # the clean value is fine
    with pytest.raises(ParamValidationError, match="does not match"):
        param.resolve(value)
