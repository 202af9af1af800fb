"""Config validation, serialisation and CLI spec parsing."""

import json

import pytest

from simulations.config import ConfigError, SimulationConfig
from simulations.io import atomic_write_json, read_json
from simulations.specs import defence_label, parse_defence, parse_params, parse_value


def test_defaults_are_the_documented_main_job():
    c = SimulationConfig()
    assert (c.dataset, c.clients, c.byzantine, c.partition) == ("digits", 20, 4, "iid")
    assert c.f_for_defence == 4


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"clients": 1}, "clients"),
        ({"byzantine": 20}, "byzantine"),
        ({"byzantine": -1}, "byzantine"),
        ({"rounds": 0}, "rounds"),
        ({"training": "adam"}, "training"),
        ({"knowledge": "psychic"}, "knowledge"),
        ({"dropout": 1.0}, "dropout"),
        ({"stragglers": -0.1}, "stragglers"),
        ({"replication": 3}, "replication"),
        ({"clip": 0.0}, "clip"),
        ({"defence_f": "sometimes"}, "defence_f"),
        ({"model": "resnet"}, "model"),
        ({"batch_size": 0}, "batch_size"),
        ({"local_epochs": 0}, "local_epochs"),
        ({"max_staleness": 0}, "max_staleness"),
        ({"dataset": "cifar"}, "dataset"),
        ({"partition": "weird"}, "partition"),
        ({"secure": True, "secure_bits": 70}, "secure_bits"),
        ({"secure": True, "secure_bits": 8, "clip": 100.0}, "headroom"),
    ],
)
def test_invalid_options_name_the_field(changes, field):
    with pytest.raises(ConfigError, match=field):
        SimulationConfig(**changes)


def test_round_trip_and_key():
    c = SimulationConfig(pre=(("bucketing", {"s": 2}),), attack_params={"z": 1.5}, defence_f="auto")
    d = json.loads(json.dumps(c.to_dict()))
    c2 = SimulationConfig.from_dict(d)
    assert c2 == c and c2.key() == c.key()
    assert c.replace(seed=1).key() != c.key()
    assert c.replace(attack_params={"z": 1.0}).key() != c.key()


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown config keys"):
        SimulationConfig.from_dict({"clients": 10, "bogus": 1})


def test_parse_values_and_params():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5
    assert parse_value("true") is True and parse_value("none") is None
    assert parse_value("unit_vec") == "unit_vec"
    assert parse_params(["z=1.5", "mode=std"], "x") == {"z": 1.5, "mode": "std"}
    with pytest.raises(ConfigError, match="--attack-param"):
        parse_params(["z"], "--attack-param")


def test_parse_defence_with_pre_aggregators():
    pre, rule, params = parse_defence("bucketing:s=2+clip:max_norm=5+centered_clipping:tau=1")
    assert pre == (("bucketing", {"s": 2}), ("clip", {"max_norm": 5}))
    assert rule == "centered_clipping" and params == {"tau": 1}
    assert defence_label(pre, rule) == "bucketing(s=2)+clip(max_norm=5)+centered_clipping"
    with pytest.raises(ConfigError):
        parse_defence("+")


def test_atomic_write_leaves_no_temp_files(tmp_path):
    p = atomic_write_json(tmp_path / "a" / "x.json", {"v": [1, 2]})
    assert read_json(p) == {"v": [1, 2]}
    assert [f.name for f in p.parent.iterdir()] == ["x.json"]


def test_labels_keep_parameters_apart():
    pre, rule, params = parse_defence("bucketing:s=2+centered_clipping:tau=1")
    assert defence_label(pre, rule, params) == "bucketing(s=2)+centered_clipping(tau=1)"
    a = SimulationConfig(defence="centered_clipping", defence_params={"tau": 0.1})
    b = a.replace(defence_params={"tau": 10})
    assert a.defence_label() != b.defence_label()


def test_split_specs_keeps_multi_parameter_specs_together():
    from simulations.specs import split_specs

    assert split_specs("centered_clipping:tau=1,iters=3,median,bucketing:s=2+krum") == [
        "centered_clipping:tau=1,iters=3",
        "median",
        "bucketing:s=2+krum",
    ]
