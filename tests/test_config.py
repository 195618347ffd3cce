import copy
import datetime

import pytest

from hpcopt import config as cfg

GOOD = {
    "name": "demo",
    "shared": {"problem": {"name": "analytic", "function": "branin"}},
    "trials": [{"name": "gs", "method": {"name": "gs", "resolution": 5}}],
}


def with_changes(*edits):
    doc = copy.deepcopy(GOOD)
    for edit in edits:
        edit(doc)
    return doc


def trial0(**kv):
    return lambda d: d["trials"][0].update(kv)


def method0(**kv):
    return lambda d: d["trials"][0]["method"].update(kv)


def problem(**kv):
    return lambda d: d["shared"]["problem"].update(kv)


BAD = [
    ("unknown top-level key", lambda d: d.update(trails=[]),
     "trails: unknown key; allowed keys: engine, max_concurrent_trials, name, output_dir, "
     "shared, slurm, sweep_groups, trials"),
    ("missing name", lambda d: d.pop("name"), "name: required key is missing"),
    ("unknown method", method0(name="annealing"),
     "trials[0].method: Input tag 'annealing' found using 'name' does not match any of the "
     "expected tags: 'gd', 'gs', 'ga', 'bo'"),
    ("unknown problem", problem(name="weather"),
     "trials[0].problem: Input tag 'weather' found using 'name' does not match any of the "
     "expected tags: 'analytic', 'coverage', 'custom'"),
    ("unknown analytic function", problem(function="himmelblau"),
     "trials[0].problem.function: Input should be 'sphere', 'rosenbrock', 'rastrigin', "
     "'branin' or 'ackley' (got 'himmelblau')"),
    ("unknown key in a method", method0(learning_rate=0.1),
     "trials[0].method.learning_rate: unknown key; allowed keys: batch_size, blocks, name, "),
    ("wrong type", method0(resolution="fine"),
     "trials[0].method.resolution: Input should be a valid integer"),
    ("bound with lower >= upper", problem(bounds={"x0": [3.0, 1.0]}),
     "trials[0].problem: bounds.x0: low (3.0) must be < high (1.0)"),
    ("infinite bound", problem(bounds={"x0": [0, float("inf")]}),
     "trials[0].problem.bounds.x0[1]: Input should be a finite number (got inf)"),
    ("NaN bound", problem(bounds={"x0": [float("nan"), 1.0]}),
     "trials[0].problem.bounds.x0[0]: Input should be a finite number (got nan)"),
    ("bounds whose width overflows a float", problem(bounds={"default": [-1e308, 1e308]}),
     "trials[0].problem: bounds.default: the width high - low of [-1e+308, 1e+308] is beyond "
     "the largest float"),
    ("infinite method option", method0(name="ga", blend_alpha=float("inf")),
     "trials[0].method.blend_alpha: Input should be a finite number (got inf)"),
    ("infinite constraint bound",
     problem(constraints=[{"kind": "linear", "coefficients": {"x0": 1.0}, "upper": float("inf")}]),
     "trials[0].problem.constraints[0].upper: Input should be a finite number (got inf)"),
    ("infinite delay", problem(delay_s=float("inf")),
     "trials[0].problem.delay_s: Input should be a finite number (got inf)"),
    ("custom parameter whose width overflows a float",
     lambda d: d["trials"][0].update(problem={
         "name": "custom", "target": "tests.problems:BrokenSetup",
         "parameters": [{"name": "a", "low": -1e308, "high": 1e308}]}),
     "trials[0].problem.parameters[0]: a: the width high - low of [-1e+308, 1e+308] is beyond"),
    ("custom parameter with an infinite bound",
     lambda d: d["trials"][0].update(problem={
         "name": "custom", "target": "tests.problems:BrokenSetup",
         "parameters": [{"name": "a", "low": float("-inf"), "high": 1}]}),
     "trials[0].problem.parameters[0].low: Input should be a finite number (got -inf)"),
    ("custom log parameter from zero",
     lambda d: d["trials"][0].update(problem={
         "name": "custom", "target": "tests.problems:BrokenSetup",
         "parameters": [{"name": "a", "low": 0, "high": 1, "log": True}]}),
     "trials[0].problem.parameters[0]: a: log scale needs low > 0, got 0.0"),
    ("coverage region with an infinite corner",
     lambda d: d["trials"][0].update(problem={"name": "coverage",
                                              "region": [0, 0, float("inf"), 5]}),
     "trials[0].problem.region[2]: Input should be a finite number (got inf)"),
    ("coverage radio setting that is not finite",
     lambda d: d["trials"][0].update(problem={"name": "coverage",
                                              "radio": {"frequency_hz": float("inf")}}),
     "trials[0].problem.radio.frequency_hz: Input should be a finite number (got inf)"),
    ("bound naming no parameter", problem(bounds={"y": [0, 1]}),
     "trials[0].problem: bounds: unknown parameter 'y'; allowed: ['x0', 'x1'] or 'default'"),
    ("log scale over negative bounds", problem(log=["x0"]),
     "trials[0].problem: parameter 'x0': log scale needs low > 0, got -5.0"),
    ("branin in 3-D", problem(dim=3), "trials[0].problem: branin is two-dimensional; got dim=3"),
    ("negative seed", trial0(seed=-1),
     "trials[0].seed: Input should be greater than or equal to 0 (got -1)"),
    ("zero evaluation budget", trial0(max_evaluations=0),
     "trials[0].max_evaluations: Input should be greater than 0 (got 0)"),
    ("trial name with a slash", trial0(name="a/b"), "trials[0].name: String should match pattern"),
    ("duplicate trial names", lambda d: d["trials"].append(copy.deepcopy(d["trials"][0])),
     "trial names must be unique; repeated: ['gs']"),
    ("a YAML date, which JSON cannot hold",
     lambda d: d["shared"]["problem"].update(bounds={"x0": [0, datetime.date(2024, 1, 1)]}),
     "shared.problem.bounds.x0[1]: datetime.date(2024, 1, 1) is a date, which a config cannot "
     "hold (it is stored as JSON): give text, a number"),
    ("no trials", lambda d: d.pop("trials"),
     "the campaign has no trials: add 'trials' or 'sweep_groups'"),
    ("unknown engine", lambda d: d.update(engine={"kind": "spark"}),
     "engine: Input tag 'spark' found using 'kind' does not match any of the expected tags: "
     "'local', 'ray'"),
    ("fractional GPU above one", lambda d: d.update(engine={"kind": "ray", "gpu_fraction": 1.5}),
     "engine: gpu_fraction above 1 must be a whole number of GPUs, got 1.5"),
    ("unknown ray engine key", lambda d: d.update(engine={"kind": "ray", "workers": 4}),
     "engine.workers: unknown key; allowed keys: address, cpus_per_worker, gpu_fraction, "),
    ("method names a parameter the space lacks", method0(blocks=[["x0"], ["x7"]]),
     "trials[0]: method.blocks[1]: unknown parameter 'x7'"),
    ("constraint names a parameter the space lacks",
     problem(constraints=[{"kind": "linear", "coefficients": {"z": 1.0}, "upper": 1.0}]),
     "trials[0].problem: constraints[0] (linear) names unknown parameter(s) ['z']"),
    ("unknown constraint kind", problem(constraints=[{"kind": "circle"}]),
     "trials[0].problem.constraints[0]: Input tag 'circle' found using 'kind' does not match"),
    ("custom target that cannot be imported",
     lambda d: d["trials"][0].update(problem={"name": "custom", "target": "nowhere.mod:P",
                                              "parameters": [{"name": "a", "low": 0, "high": 1}]}),
     "trials[0].problem.target: cannot import 'nowhere.mod:P'"),
    ("sweep grid over a key that does not exist",
     lambda d: d.update(sweep_groups=[{"name": "g", "base": {"method": {"name": "gs"}},
                                       "grid": {"method.fineness": [1]}}]),
     "sweep_groups[0] (trial 'g-fineness=1-seed=0').method.fineness: unknown key"),
    ("sweep group with no seeds", lambda d: d.update(sweep_groups=[{"name": "g", "seeds": []}]),
     "sweep_groups[0].seeds: an empty list makes no trials; give at least one value"),
    ("sweep grid with an empty list",
     lambda d: d.update(sweep_groups=[{"name": "g", "base": {"method": {"name": "ga"}},
                                       "grid": {"method.population": []}}]),
     "sweep_groups[0].grid.method.population: an empty list makes no trials; give at least "
     "one value"),
    ("sweep grid key through a value",
     lambda d: d.update(sweep_groups=[{"name": "g", "base": {"method": {"name": "gs"}},
                                       "grid": {"problem.function.x": [1, 2]}}]),
     "sweep_groups[0].grid.problem.function.x: problem.function is a value ('branin'), not a "
     "mapping"),
    ("sweep grid key through a list",
     lambda d: d.update(sweep_groups=[{"name": "g",
                                       "base": {"method": {"name": "gs", "blocks": [["x0"]]}},
                                       "grid": {"method.blocks.x": [1]}}]),
     "sweep_groups[0].grid.method.blocks.x: method.blocks is a value ([['x0']]), not a mapping"),
    ("slurm time with 99 minutes", lambda d: d.update(slurm={"time": "01:99:99"}),
     "slurm.time: minutes must be below 60, got 99; the forms are MM, MM:SS, HH:MM:SS, D-HH, "
     "D-HH:MM or D-HH:MM:SS (got '01:99:99')"),
    ("slurm time with 24 hours after days", lambda d: d.update(slurm={"time": "1-24:00"}),
     "slurm.time: hours must be below 24, got 24"),
    ("slurm time of zero", lambda d: d.update(slurm={"time": "0"}),
     "slurm.time: give a limit above 0 (Slurm reads 0 as no limit)"),
    ("slurm time in no Slurm form", lambda d: d.update(slurm={"time": "1:2:3:4"}),
     "slurm.time: not a Slurm time limit; give MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"),
    ("slurm memory without a number", lambda d: d.update(slurm={"mem": "lots"}),
     "slurm.mem: must be a whole number with an optional unit K, M, G or T"),
    ("slurm partition with a space", lambda d: d.update(slurm={"partition": "gpu\nrm"}),
     "slurm.partition: must be one word without spaces"),
    ("infinite slurm join timeout", lambda d: d.update(slurm={"join_timeout_s": float("inf")}),
     "slurm.join_timeout_s: Input should be a finite number (got inf)"),
]  # fmt: skip


@pytest.mark.parametrize(("doc_edit", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_is_refused_with_a_message_naming_the_key(doc_edit, message):
    with pytest.raises(cfg.ConfigError) as info:
        cfg.parse(with_changes(doc_edit), source="demo.yaml")
    assert any(message in p for p in info.value.problems), info.value.problems


def test_the_good_config_is_accepted():
    campaign = cfg.parse(GOOD)
    assert [t.name for t in campaign.trials] == ["gs"]
    assert campaign.output_dir == "runs/demo"


def test_shared_defaults_merge_under_each_trial():
    doc = with_changes(problem(dim=2), trial0(problem={"function": "sphere"}))
    trial = cfg.parse(doc).trials[0]
    assert trial.problem.function == "sphere" and trial.problem.dim == 2


def test_a_trial_naming_another_method_replaces_the_shared_method():
    doc = with_changes(
        lambda d: d["shared"].update(method={"name": "gs", "resolution": 5}),
        trial0(method={"name": "bo", "n_trials": 7}),
    )
    method = cfg.parse(doc).trials[0].method
    assert method.name == "bo" and method.n_trials == 7


def test_sweep_groups_expand_grid_and_seeds_into_named_trials():
    doc = with_changes(
        lambda d: d.update(
            sweep_groups=[
                {
                    "name": "ga",
                    "base": {"method": {"name": "ga"}, "problem": {"function": "sphere"}},
                    "grid": {"method.population": [10, 20], "problem.dim": [2, 3]},
                    "seeds": [0, 1],
                }
            ]
        )
    )
    trials = cfg.parse(doc).trials[1:]
    assert len(trials) == 8
    assert trials[0].name == "ga-population=10-dim=2-seed=0"
    assert trials[-1].name == "ga-population=20-dim=3-seed=1"
    assert (trials[-1].method.population, trials[-1].problem.dim, trials[-1].seed) == (20, 3, 1)


def test_all_problems_of_a_config_are_reported_together():
    doc = with_changes(method0(resolution="fine"), trial0(seed=-1))
    with pytest.raises(cfg.ConfigError) as info:
        cfg.parse(doc)
    assert len(info.value.problems) == 2


def test_yaml_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(cfg.ConfigError, match=r"broken\.yaml:\n  - not valid YAML"):
        cfg.load(path)


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(cfg.ConfigError, match="the top level must be a mapping"):
        cfg.load(path)


def test_json_configs_are_read_too(tmp_path):
    import json

    path = tmp_path / "c.json"
    path.write_text(json.dumps(GOOD))
    assert cfg.load(path).name == "demo"


def test_a_file_that_is_not_utf8_names_the_byte_and_its_offset(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: demo\n# caf\xe9\n")
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load(path)
    assert info.value.source == str(path)
    assert info.value.problems == [
        "not UTF-8 text: byte 0xe9 at offset 16 (line 2) is not valid UTF-8; save the file as UTF-8"
    ]


def test_a_top_level_key_given_twice_names_it_and_its_lines(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("name: demo\ntrials:\n  - {name: a}\nshared: {}\ntrials: []\n")
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load(path)
    assert info.value.problems == [
        "trials: given 2 times in one mapping, at lines 2 and 5; give each key once"
    ]


def test_a_nested_key_given_twice_names_its_path(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text(
        "name: demo\ntrials:\n  - name: a\n    method: {name: gs, name: gd}\n"
        "    problem:\n      function: sphere\n      function: branin\n"
    )
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load(path)
    assert info.value.problems == [
        "trials[0].method.name: given 2 times in one mapping, at 4:14 and 4:24 (line:column); "
        "give each key once",
        "trials[0].problem.function: given 2 times in one mapping, at lines 6 and 7; give each "
        "key once",
    ]


def test_yaml_merge_keys_may_override_what_they_merge(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text(
        "name: demo\nshared:\n  problem: &p {name: analytic, function: sphere}\n"
        "trials:\n  - name: a\n    problem: {<<: *p, function: branin}\n"
        "    method: {name: gs, resolution: 2}\n"
    )
    assert cfg.load(path).trials[0].problem.function == "branin"


def test_a_json_key_given_twice_names_its_path(tmp_path):
    path = tmp_path / "twice.json"
    path.write_text('{"name": "demo", "trials": [{"name": "a", "seed": 1, "seed": 2}]}')
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load(path)
    assert info.value.problems == [
        "trials[0].seed: given 2 times in one object; give each key once"
    ]
