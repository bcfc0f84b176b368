"""Experiment configs: defaults filled once, sweeps expanded in a fixed order, ``--set``
values parsed as TOML, and every mistake one ConfigError naming the file and the key."""
from __future__ import annotations

import tomllib

import pytest
import tomli_w

from testbed.core import config as C
from testbed.core.errors import ConfigError
from testbed.core.schema import Field, check_table, check_value
from testbed.studies.experiment import load_experiment, resolve
from testbed.workloads.spec import FIELDS as WORKLOAD_FIELDS

#: a config small enough that nothing in this file ever takes long
TINY = """\
[cluster]
nodes = 4
[workload]
shape = "independent"
jobs = 20
[run]
seeds = [0, 1]
"""


def write(tmp_path, text: str, name: str = "exp.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(fn, *args, **kwargs) -> ConfigError:
    """Call ``fn`` and return the ConfigError it raises (failing if it raises nothing)."""
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    return info.value


# --- defaults -----------------------------------------------------------------------

@pytest.mark.parametrize("section, fields", [("cluster", C.CLUSTER), ("scheduler", C.SCHEDULER),
                                             ("run", C.RUN), ("faults", C.FAULTS)])
def test_resolve_of_an_empty_config_fills_every_default(section, fields):
    """resolve({}) gives each core section with every key, each at its Field's default."""
    out = resolve({})
    assert set(out[section]) == set(fields)
    for key, field in fields.items():
        assert out[section][key] == field.default, f"{section}.{key}"


def test_resolve_fills_the_workload_defaults():
    """The resolved [workload] has every key but the unset optionals ``shift`` and ``drift``, at its default."""
    w = resolve({})["workload"]
    assert set(WORKLOAD_FIELDS) - set(w) == {"shift", "drift"}
    assert w["jobs"] == WORKLOAD_FIELDS["jobs"].default
    assert w["shape"] == "independent"
    assert len(w["functions"]) == 1                       # the single default function


def test_resolve_keeps_given_values_and_converts_ints_where_numbers_are_expected():
    out = resolve({"cluster": {"nodes": 7, "cpus_per_node": 2}})
    assert out["cluster"]["nodes"] == 7
    assert out["cluster"]["cpus_per_node"] == 2.0 and isinstance(out["cluster"]["cpus_per_node"], float)
    assert out["cluster"]["latency_s"] == C.CLUSTER["latency_s"].default


def test_defaults_are_copies_not_shared_objects():
    """Mutating one resolved config never changes a default (or the next resolve)."""
    first = resolve({})
    first["cluster"]["resources"]["accel"] = 1
    first["run"]["seeds"].append(99)
    first["scheduler"]["spillover"]["threshold"] = 0
    second = resolve({})
    assert second["cluster"]["resources"] == {}
    assert second["run"]["seeds"] == [0]
    assert second["scheduler"]["spillover"] == {"name": "ResourceAware", "threshold": 8}


def test_node_groups_get_their_own_defaults():
    out = resolve({"cluster": {"node_groups": [{"count": 2}, {"cpus": 4, "speed": 0.5}]}})
    g0, g1 = out["cluster"]["node_groups"]
    assert g0 == {"count": 2, "cpus": 8.0, "gpus": 0.0, "resources": {}, "speed": 1.0}
    assert g1["count"] == 1 and g1["cpus"] == 4.0 and g1["speed"] == 0.5


def test_a_bad_node_group_names_its_index():
    err = config_error(resolve, {"cluster": {"node_groups": [{"count": 1}, {"speed": 0}]}})
    assert err.key == "cluster.node_groups[1].speed"


def test_the_resolved_config_round_trips_through_toml(tmp_path):
    """What config.toml records (``Experiment.resolved``) loads back to the same experiment."""
    exp = load_experiment(write(tmp_path, TINY + '[sweep]\n"cluster.nodes" = [2, 3]\n'))
    again = load_experiment(write(tmp_path, tomli_w.dumps(exp.resolved), "resolved.toml"))
    assert again.resolved == exp.resolved
    assert [p.config for p in again.points] == [p.config for p in exp.points]


# --- schema -------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, message", [
    (Field((int,), 1), True, "expected an integer, got a boolean"),
    (Field((int,), 1), 1.5, "expected an integer, got float"),
    (Field((float,), 1.0), "x", "expected a number, got str"),
    (Field((float,), 1.0), float("inf"), "must be finite"),
    (Field((float,), 1.0, lambda x: x > 0, "> 0"), -1, "must be > 0, got -1.0"),
    (Field((str,), "a", choices=("a", "b")), "c", "must be one of 'a', 'b', got 'c'"),
    (Field((list,), [], items=(int,)), [1, "2"], "item 1 must be an integer"),
    (Field((list,), [], items=(int,)), [True], "item 0 must be an integer"),
])
def test_check_value_rejects_with_the_rule_in_words(field, value, message):
    err = config_error(check_value, field, value, "sec.key")
    assert err.key == "sec.key"
    assert message in err.message


def test_check_table_rejects_unknown_and_missing_keys():
    fields = {"a": Field((int,)), "b": Field((int,), 2)}
    assert check_table({"a": 1}, fields, "t") == {"a": 1, "b": 2}
    unknown = config_error(check_table, {"a": 1, "c": 3}, fields, "t")
    assert unknown.key == "t.c" and "unknown key" in unknown.message and "a, b" in unknown.message
    missing = config_error(check_table, {}, fields, "t")
    assert missing.key == "t.a" and "required" in missing.message
    not_table = config_error(check_table, 3, fields, "t")
    assert not_table.key == "t" and "expected a table" in not_table.message


# --- ConfigError --------------------------------------------------------------------

def test_config_error_renders_file_key_message():
    assert str(ConfigError("bad", key="a.b", file="x.toml")) == "x.toml: a.b: bad"
    assert str(ConfigError("bad", key="a.b")) == "a.b: bad"
    assert str(ConfigError("bad")) == "bad"


def test_with_file_names_the_file_once():
    err = ConfigError("bad", key="k").with_file("one.toml")
    assert str(err) == "one.toml: k: bad"
    assert str(err.with_file("two.toml")) == "one.toml: k: bad"


def test_with_key_prefixes_a_relative_key_only():
    assert ConfigError("bad", key="alpha").with_key("scheduler.task_time").key == "scheduler.task_time.alpha"
    assert ConfigError("bad", key="scheduler.x").with_key("scheduler").key == "scheduler.x"
    assert ConfigError("bad").with_key("run").key == "run"


# --- load_toml ----------------------------------------------------------------------

def test_load_toml_reads_a_file(tmp_path):
    assert C.load_toml(write(tmp_path, "[cluster]\nnodes = 3\n")) == {"cluster": {"nodes": 3}}


@pytest.mark.parametrize("content, message", [
    (b"[cluster\nnodes = 4\n", "malformed TOML"),
    (b"[cluster]\nnodes = \n", "malformed TOML"),
    (b"\xff\xfe[cluster]\n", "not UTF-8"),
])
def test_load_toml_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    err = config_error(C.load_toml, path)
    assert err.file == str(path)
    assert message in err.message
    assert "\n" not in str(err)


def test_load_toml_of_a_missing_file_or_a_directory(tmp_path):
    assert config_error(C.load_toml, tmp_path / "nope.toml").message == "no such file"
    assert "directory" in config_error(C.load_toml, tmp_path).message


# --- --set values and overrides ----------------------------------------------------

@pytest.mark.parametrize("text, value", [
    ("0.5", 0.5),
    ("3", 3),
    ("-1", -1),
    ("true", True),
    ("false", False),
    ("[1,2]", [1, 2]),
    ('{name="X"}', {"name": "X"}),
    ('{name = "ExponentialAverage", alpha = 0.2}', {"name": "ExponentialAverage", "alpha": 0.2}),
    ('"quoted"', "quoted"),
    ("abc", "abc"),
    ("PaperWaitTime", "PaperWaitTime"),
    ("examples.user_policy:ShortestExpectedQueue", "examples.user_policy:ShortestExpectedQueue"),
    ("", ""),
])
def test_parse_value_is_toml_else_a_string(text, value):
    got = C.parse_value(text)
    assert got == value and type(got) is type(value)


def test_apply_overrides_sets_nested_keys_on_a_copy():
    cfg = {"cluster": {"nodes": 4}}
    out = C.apply_overrides(cfg, ["cluster.nodes=8", "workload.jobs = 50",
                                  'scheduler.task_time={name="LastValue"}'])
    assert out == {"cluster": {"nodes": 8}, "workload": {"jobs": 50},
                   "scheduler": {"task_time": {"name": "LastValue"}}}
    assert cfg == {"cluster": {"nodes": 4}}


def test_apply_overrides_splits_on_the_first_equals_only():
    out = C.apply_overrides({}, ["run.study=a=b"])
    assert out["run"]["study"] == "a=b"


def test_apply_overrides_later_wins():
    assert C.apply_overrides({}, ["cluster.nodes=2", "cluster.nodes=3"])["cluster"]["nodes"] == 3


def test_apply_overrides_can_set_a_policy_argument():
    out = C.apply_overrides({"scheduler": {"task_time": {"name": "ExponentialAverage", "alpha": 0.1}}},
                            ["scheduler.task_time.alpha=0.3"])
    assert out["scheduler"]["task_time"] == {"name": "ExponentialAverage", "alpha": 0.3}


@pytest.mark.parametrize("item, key, message", [
    ("cluster.nodes", None, "--set expects KEY=VALUE, got 'cluster.nodes'"),
    ("=3", None, "--set expects KEY=VALUE"),
    ("nodes=3", "nodes", "key must look like 'section.key'"),
    ("cluster..nodes=3", "cluster..nodes", "key must look like 'section.key'"),
    ("clutser.nodes=3", "clutser.nodes", "unknown section 'clutser'"),
    ("cluster.nodes.x=3", "cluster.nodes.x", "'nodes' is not a table"),
])
def test_bad_overrides(item, key, message):
    err = config_error(C.apply_overrides, {"cluster": {"nodes": 4}}, [item])
    assert err.key == key
    assert message in err.message


# --- sweeps -------------------------------------------------------------------------

KNOWN = resolve({})


def test_no_sweep_is_one_unlabelled_point():
    assert C.sweep_points(None, KNOWN) == [("", {})]
    assert C.sweep_points({}, KNOWN) == [("", {})]


def test_grid_is_the_product_with_the_first_axis_slowest():
    points = C.sweep_points({"cluster.nodes": [1, 2], "cluster.cpus_per_node": [4, 8]}, KNOWN)
    assert [over for _, over in points] == [
        {"cluster.nodes": 1, "cluster.cpus_per_node": 4},
        {"cluster.nodes": 1, "cluster.cpus_per_node": 8},
        {"cluster.nodes": 2, "cluster.cpus_per_node": 4},
        {"cluster.nodes": 2, "cluster.cpus_per_node": 8},
    ]
    labels = [label for label, _ in points]
    assert len(set(labels)) == 4
    assert "nodes=1" in labels[0] and "cpus_per_node=4" in labels[0]
    assert "nodes=2" in labels[3] and "cpus_per_node=8" in labels[3]


def test_cases_are_crossed_with_the_grid_cases_outermost():
    sweep = {"cluster.nodes": [1, 2],
             "cases": [{"label": "A", "scheduler.placement": "Random"},
                       {"label": "B", "scheduler.placement": "RoundRobin"}]}
    points = C.sweep_points(sweep, KNOWN)
    assert [over for _, over in points] == [
        {"scheduler.placement": "Random", "cluster.nodes": 1},
        {"scheduler.placement": "Random", "cluster.nodes": 2},
        {"scheduler.placement": "RoundRobin", "cluster.nodes": 1},
        {"scheduler.placement": "RoundRobin", "cluster.nodes": 2},
    ]
    labels = [label for label, _ in points]
    assert [lbl.split(" | ")[0] for lbl in labels] == ["A", "A", "B", "B"]
    assert labels[0].endswith("nodes=1") and labels[3].endswith("nodes=2")


def test_cases_alone_use_their_labels():
    sweep = {"cases": [{"label": "fast", "cluster.nodes": 8}, {"label": "slow", "cluster.nodes": 2}]}
    assert C.sweep_points(sweep, KNOWN) == [("fast", {"cluster.nodes": 8}), ("slow", {"cluster.nodes": 2})]


def test_a_case_without_a_label_is_labelled_by_its_values():
    sweep = {"cases": [{"scheduler.task_time": {"name": "ExponentialAverage", "alpha": 0.05}}]}
    [(label, over)] = C.sweep_points(sweep, KNOWN)
    assert "ExponentialAverage(alpha=0.05)" in label
    assert over == {"scheduler.task_time": {"name": "ExponentialAverage", "alpha": 0.05}}


def test_a_grid_value_wins_over_a_case_value_for_the_same_key():
    [(_, over)] = C.sweep_points({"cluster.nodes": [5], "cases": [{"label": "c", "cluster.nodes": 9}]}, KNOWN)
    assert over == {"cluster.nodes": 5}


def test_a_sweep_may_reach_into_a_policy_table():
    points = C.sweep_points({"scheduler.spillover.threshold": [2, 4]}, KNOWN)
    assert [over for _, over in points] == [{"scheduler.spillover.threshold": 2},
                                            {"scheduler.spillover.threshold": 4}]


SIZE = {"cluster.nodes": [10, 100, 1000], "workload.drivers": [1, 10, 100], "cluster.global_schedulers": [1, 4, 16]}


def test_a_linked_axis_sets_its_keys_together():
    points = C.sweep_points({"linked": {"size": SIZE}}, KNOWN)
    assert [over for _, over in points] == [
        {"cluster.nodes": n, "workload.drivers": d, "cluster.global_schedulers": g}
        for n, d, g in zip(*SIZE.values())]
    assert points[0][0] == "nodes=10, drivers=1, global_schedulers=1"


def test_linked_axes_are_grid_axes_in_written_order_crossed_with_the_cases():
    sweep = {"scheduler.placement": ["Random", "PaperWaitTime"],
             "linked": {"size": {"cluster.nodes": [10, 100], "workload.drivers": [1, 10], "label": ["small", "big"]},
                        "load": {"workload.rate_per_s": [5.0, 9.0], "workload.jobs": [50, 90]}},
             "cases": [{"label": "A", "cluster.cpus_per_node": 2.0}, {"label": "B", "cluster.cpus_per_node": 4.0}]}
    points = C.sweep_points(sweep, KNOWN)
    assert len(points) == 2 * 2 * 2 * 2
    assert points[0] == ("A | placement=Random, small, rate_per_s=5.0, jobs=50",
                         {"cluster.cpus_per_node": 2.0, "scheduler.placement": "Random", "cluster.nodes": 10,
                          "workload.drivers": 1, "workload.rate_per_s": 5.0, "workload.jobs": 50})
    assert [lbl for lbl, _ in points[:4]] == [
        "A | placement=Random, small, rate_per_s=5.0, jobs=50", "A | placement=Random, small, rate_per_s=9.0, jobs=90",
        "A | placement=Random, big, rate_per_s=5.0, jobs=50", "A | placement=Random, big, rate_per_s=9.0, jobs=90"]
    assert all(over["workload.jobs"] == {5.0: 50, 9.0: 90}[over["workload.rate_per_s"]] for _, over in points)
    assert all(over["workload.drivers"] == {10: 1, 100: 10}[over["cluster.nodes"]] for _, over in points)
    assert len({lbl for lbl, _ in points}) == len(points)


@pytest.mark.parametrize("linked, key, message", [
    ({"size": {"cluster.nodes": [1, 2, 3], "workload.drivers": [1, 2]}}, "sweep.linked.size.workload.drivers",
     "has 2 values but 'cluster.nodes' has 3"),
    ({"size": {"cluster.nodez": [1, 2]}}, "sweep.linked.size", "'cluster.nodez', which is not a config key"),
    ({"size": {"run.seeds": [[1], [2]]}}, "sweep.linked.size", "cannot be swept"),
    ({"size": {"cluster.nodes": 3}}, "sweep.linked.size.cluster.nodes", "non-empty list"),
    ({"size": {"cluster.nodes": []}}, "sweep.linked.size.cluster.nodes", "non-empty list"),
    ({"size": {"label": ["a"]}}, "sweep.linked.size", "at least one"),
    ({"size": [1, 2]}, "sweep.linked.size", "must be a table"),
    ({}, "sweep.linked", "must be a table of linked axes"),
    ({"size": {"cluster.nodes": [1, 2], "label": ["a"]}}, "sweep.linked.size.label", "list of 2 non-empty strings"),
    ({"size": {"cluster.nodes": [1, 2], "label": ["a", 3]}}, "sweep.linked.size.label", "list of 2"),
    ({"size": {"cluster.nodes": [1, 2]}, "other": {"cluster.nodes": [3, 4]}}, "sweep.linked.other",
     "'cluster.nodes' is already set by sweep.linked.size"),
])
def test_bad_linked_axes_name_the_key(linked, key, message):
    err = config_error(C.sweep_points, {"linked": linked}, KNOWN)
    assert err.key == key
    assert message in err.message


def test_a_key_on_a_grid_axis_and_a_linked_axis_is_refused():
    err = config_error(C.sweep_points, {"cluster.nodes": [1, 2], "linked": {"size": {"cluster.nodes": [3, 4]}}}, KNOWN)
    assert err.key == "sweep.linked.size" and "already set by sweep.cluster.nodes" in err.message


def test_a_linked_axis_in_a_file_expands_and_its_errors_name_the_file(tmp_path):
    text = TINY + '[sweep.linked.size]\n"cluster.nodes" = [2, 3]\n"workload.jobs" = [4, 6]\n'
    exp = load_experiment(write(tmp_path, text))
    assert [(p.config["cluster"]["nodes"], p.config["workload"]["jobs"]) for p in exp.points] == [(2, 4), (3, 6)]
    assert exp.resolved["sweep"] == {"linked": {"size": {"cluster.nodes": [2, 3], "workload.jobs": [4, 6]}}}
    bad = write(tmp_path, TINY + '[sweep.linked.size]\n"cluster.nodes" = [2, 3]\n"workload.jobs" = [4]\n', "bad.toml")
    err = config_error(load_experiment, bad)
    assert err.file == str(bad) and err.key == "sweep.linked.size.workload.jobs"
    assert "\n" not in str(err)
    # a linked value that is itself invalid is caught at its sweep point
    worse = write(tmp_path, TINY + '[sweep.linked.size]\n"cluster.nodes" = [2, 0]\n"workload.jobs" = [4, 6]\n',
                  "worse.toml")
    err = config_error(load_experiment, worse)
    assert err.key == "cluster.nodes" and "nodes=0" in err.message


@pytest.mark.parametrize("sweep, key, message", [
    ({"cluster.nodez": [1, 2]}, "sweep", "'cluster.nodez', which is not a config key"),
    ({"clutser.nodes": [1, 2]}, "sweep", "'clutser.nodes', which is not a config key"),
    ({"cluster": [1, 2]}, "sweep", "expected 'section.key'"),
    ({"cluster.nodes.x": [1]}, "sweep", "'cluster.nodes' is not a table"),
    ({"cluster.nodes": 4}, "sweep.cluster.nodes", "non-empty list"),
    ({"cluster.nodes": []}, "sweep.cluster.nodes", "non-empty list"),
    ({"cases": []}, "sweep.cases", "non-empty list of tables"),
    ({"cases": [1]}, "sweep.cases", "non-empty list of tables"),
    ({"cases": [{"label": "x"}]}, "sweep.cases[0]", "at least one key"),
    ({"cases": [{"label": 3, "cluster.nodes": 1}]}, "sweep.cases[0].label", "must be a string"),
    ({"cases": [{"cluster.nodes": 1}, {"cluster.nodez": 1}]}, "sweep.cases[1]", "'cluster.nodez'"),
])
def test_bad_sweeps_fail_before_anything_runs(sweep, key, message):
    err = config_error(C.sweep_points, sweep, KNOWN)
    assert err.key == key
    assert message in err.message


def test_apply_point_sets_dotted_keys_on_a_copy():
    cfg = {"cluster": {"nodes": 4}}
    out = C.apply_point(cfg, {"cluster.nodes": 8, "workload.jobs": 3})
    assert out == {"cluster": {"nodes": 8}, "workload": {"jobs": 3}}
    assert cfg == {"cluster": {"nodes": 4}}


# --- load_experiment ----------------------------------------------------------------

def test_load_experiment_resolves_every_point(tmp_path):
    path = write(tmp_path, TINY + '[sweep]\n"cluster.nodes" = [2, 3]\n', "tiny.toml")
    exp = load_experiment(path)
    assert exp.name == "tiny" and exp.path == str(path)
    assert exp.seeds == [0, 1] and exp.study == "compare"
    assert [p.overrides for p in exp.points] == [{"cluster.nodes": 2}, {"cluster.nodes": 3}]
    assert [p.config["cluster"]["nodes"] for p in exp.points] == [2, 3]
    assert all(set(p.config["cluster"]) == set(C.CLUSTER) for p in exp.points)
    assert exp.resolved["cluster"]["nodes"] == 4                      # the unswept base
    assert exp.resolved["sweep"] == {"cluster.nodes": [2, 3]}          # recorded for config.toml


def test_load_experiment_without_a_sweep_has_one_point_and_no_sweep_section(tmp_path):
    exp = load_experiment(write(tmp_path, TINY))
    assert len(exp.points) == 1 and exp.points[0].label == "" and exp.points[0].overrides == {}
    assert "sweep" not in exp.resolved


def test_load_experiment_applies_overrides_before_the_sweep(tmp_path):
    exp = load_experiment(write(tmp_path, TINY + '[sweep]\n"cluster.nodes" = [2, 3]\n'),
                          ["workload.jobs=7", "cluster.nodes=9"])
    assert exp.resolved["workload"]["jobs"] == 7
    assert exp.resolved["cluster"]["nodes"] == 9
    assert [p.config["cluster"]["nodes"] for p in exp.points] == [2, 3]   # the sweep wins
    assert all(p.config["workload"]["jobs"] == 7 for p in exp.points)


def test_an_override_can_add_a_sweep_axis_that_did_not_exist(tmp_path):
    exp = load_experiment(write(tmp_path, TINY), ['sweep.cases=[{label="a", "cluster.nodes"=2}]'])
    assert [p.label for p in exp.points] == ["a"]
    assert exp.points[0].config["cluster"]["nodes"] == 2


@pytest.mark.parametrize("section_text, key, message", [
    ("[clutser]\nnodes = 4\n", "clutser", "unknown section"),
    ("[cluster]\nnodez = 4\n", "cluster.nodez", "unknown key"),
    ('[cluster]\nnodes = "four"\n', "cluster.nodes", "expected an integer"),
    ("[cluster]\nbandwidth_bytes_per_s = -1\n", "cluster.bandwidth_bytes_per_s", "must be > 0"),
    ('[scheduler]\ntask_time = {name = "ExponentialAverage", alpha = 1.5}\n', "scheduler.task_time", "alpha"),
    ('[scheduler]\ntask_time = "NoSuchEstimator"\n', "scheduler.task_time", "unknown estimator 'NoSuchEstimator'"),
    ('[scheduler]\nplacement = "nosuchpkg.mod:X"\n', "scheduler.placement", "cannot import module 'nosuchpkg.mod'"),
    ('[scheduler]\nplacement = "testbed.policy.estimators:ExponentialAverage"\n', "scheduler.placement",
     "subclass of testbed.policy.PlacementPolicy"),
    ('[scheduler]\nplacement = {name = "PaperWaitTime", nosuch = 1}\n', "scheduler.placement", "bad arguments"),
    ('[run]\nstudy = "nope"\n', "run.study", "unknown study 'nope'"),
    ('[run]\nseeds = []\n', "run.seeds", "non-empty list"),
    ("[workload]\njobs = 0\n", "workload.jobs", "in 1..1,000,000,000"),
    ('[sweep]\n"cluster.nodez" = [1, 2]\n', "sweep", "'cluster.nodez'"),
])
def test_load_experiment_errors_name_the_file_and_the_key(tmp_path, section_text, key, message):
    path = write(tmp_path, section_text)
    err = config_error(load_experiment, path)
    assert err.file == str(path)
    assert err.key == key
    assert message in err.message
    assert str(err).startswith(f"{path}: {key}: ")
    assert "\n" not in str(err)


def test_an_invalid_sweep_point_fails_at_load_naming_the_point(tmp_path):
    """Every point is resolved at load time: cluster.nodes = 0 fails before any run starts."""
    path = write(tmp_path, TINY + '[sweep]\n"cluster.nodes" = [4, 0]\n')
    err = config_error(load_experiment, path)
    assert err.file == str(path)
    assert err.key == "cluster.nodes"
    assert "sweep point" in err.message and "nodes=0" in err.message
    assert "must be in 1..1,000,000" in err.message


def test_an_invalid_policy_in_a_sweep_case_names_the_case(tmp_path):
    path = write(tmp_path, TINY + '[[sweep.cases]]\nlabel = "good"\n"scheduler.placement" = "Random"\n'
                                  '[[sweep.cases]]\nlabel = "typo"\n"scheduler.placement" = "Randon"\n')
    err = config_error(load_experiment, path)
    assert err.key == "scheduler.placement"
    assert "[typo]" in err.message and "'Randon'" in err.message


def test_a_sweep_over_an_argument_of_the_default_estimator(tmp_path):
    """``scheduler.task_time`` is not in the file, so it is the default EWMA; sweeping its
    ``alpha`` passes the key check and should vary that default's alpha."""
    exp = load_experiment(write(tmp_path, TINY + '[sweep]\n"scheduler.task_time.alpha" = [0.2, 0.5]\n'))
    assert [p.config["scheduler"]["task_time"] for p in exp.points] == [
        {"name": "ExponentialAverage", "alpha": 0.2}, {"name": "ExponentialAverage", "alpha": 0.5}]


def test_sweeping_run_seeds_is_rejected_rather_than_ignored(tmp_path):
    """A sweep over a key the runner does not read per point must fail, not be dropped silently."""
    with pytest.raises(ConfigError):
        load_experiment(write(tmp_path, TINY + '[sweep]\n"run.seeds" = [[0], [1, 2, 3]]\n'))


@pytest.mark.parametrize("name", ["quickstart", "fig8b_scalability", "fig10_gcs_ft", "fig11b_actors"])
def test_shipped_configs_resolve_and_round_trip(tmp_path, name):
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "experiments" / f"{name}.toml"
    exp = load_experiment(path)
    assert len(exp.points) > 1
    text = tomli_w.dumps(exp.resolved)
    assert tomllib.loads(text) == exp.resolved
    again = load_experiment(write(tmp_path, text, f"{name}.toml"))
    assert [p.config for p in again.points] == [p.config for p in exp.points]
    assert [p.label for p in again.points] == [p.label for p in exp.points]


def test_case_groups_are_crossed_with_each_other_and_named_per_point():
    """[[sweep.cases.estimator]] x [[sweep.cases.workload]] x a linked axis: every combination,
    the first group slowest; sweep_factors names each point's case per group and option per
    linked axis, which runs.csv records (case_<group> columns) for studies to pair on."""
    sweep = {"cases": {"estimator": [{"label": "EWMA", "scheduler.task_time": {"name": "ExponentialAverage"}},
                                     {"label": "mean", "scheduler.task_time": {"name": "CumulativeMean"}}],
                       "workload": [{"label": "exp", "cluster.nodes": 2}, {"label": "slow", "cluster.nodes": 3}]},
             "linked": {"size": {"workload.drivers": [1, 2], "label": ["small", "big"]}}}
    points = C.sweep_points(sweep, KNOWN)
    factors = C.sweep_factors(sweep, KNOWN)
    assert len(points) == len(factors) == 8
    assert [lbl for lbl, _ in points][:3] == ["EWMA | exp | small", "EWMA | exp | big", "EWMA | slow | small"]
    assert factors[5] == {"estimator": "mean", "workload": "exp", "size": "big"}
    assert points[5][1] == {"scheduler.task_time": {"name": "CumulativeMean"}, "cluster.nodes": 2,
                            "workload.drivers": 2}
    from testbed.studies.experiment import factor_column
    assert [factor_column(g) for g in ("", "estimator")] == ["case", "case_estimator"]


@pytest.mark.parametrize("sweep, says", [
    ({"cases": {}}, "at least one case group"),
    ({"cases": {"e": [{"label": "a", "cluster.nodes": 2}, {"label": "a", "cluster.nodes": 3}]}}, "two cases"),
    ({"cases": {"size": [{"label": "a", "cluster.nodes": 2}]}, "linked": {"size": {"workload.drivers": [1]}}},
     "both a case group and a linked axis"),
])
def test_bad_case_groups_are_refused_naming_the_key(sweep, says):
    with pytest.raises(ConfigError, match=says):
        C.sweep_points(sweep, KNOWN)
