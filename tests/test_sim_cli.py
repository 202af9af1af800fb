"""The ``fortis`` command line: options derived from the config, rows named by what they ran,
matrix attack specs with their own parameters, ``--version``."""

import dataclasses
import json
import re

import pytest

import robust
from simulations.cli import DEFENCE_KINDS, RUN_STATE, build_parser, main
from simulations.config import DEFAULT_LR, SimulationConfig, default_byzantine
from simulations.errors import ConfigError
from simulations.matrix import matrix_configs
from simulations.options import COMMANDS, cli_option, config_kwargs
from simulations.rows import simulate_rows

FIELDS = dataclasses.fields(SimulationConfig)


def _default(field):
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _subparser(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[command]


# -- one source for defaults ------------------------------------------------------------------
@pytest.mark.parametrize("command", COMMANDS)
def test_every_config_field_is_an_option_with_the_config_default(command):
    actions = {a.dest: a for a in _subparser(command)._actions}
    args = build_parser().parse_args([command])
    kwargs = config_kwargs(args, command)
    for field in FIELDS:
        opt = cli_option(field)
        assert opt is not None, f"config field {field.name!r} has no command-line option"
        if command == "matrix" and opt.grid is not None:
            # Set by a grid option instead; that option must exist.
            assert any(opt.grid in a.option_strings for a in actions.values()), opt.grid
            assert field.name not in kwargs
            continue
        action = actions.get(field.name)
        assert action is not None, f"{command}: no option sets {field.name!r}"
        assert set(opt.flags) <= set(action.option_strings)
        if opt.action != "append":
            assert action.default == _default(field), field.name
        # What an empty command line gives is exactly the field's default.
        expected = _default(field)
        if field.name in ("attack", "defence"):
            expected = _default(field).partition(":")[0]  # the spec's name
        assert kwargs[field.name] == expected, field.name
    if command == "simulate":
        assert SimulationConfig(**kwargs) == SimulationConfig()


def test_help_shows_the_config_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for field in FIELDS:
        opt = cli_option(field)
        shown = opt.default_text
        if shown is None:
            default = _default(field)
            shown = "none" if default in ((), {}, None) else str(default)
        assert f"(default: {shown})" in text, field.name
    # The derived defaults say what they derive from, with the config's numbers.
    assert "(default: 20% of clients, at least 1)" in text
    assert f"dsgd {DEFAULT_LR['dsgd']}" in text and "(default: 20)" in text


# -- discovering the defences -----------------------------------------------------------------
def _help(capsys, command):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_the_registry_and_points_at_fortis_defences(command, capsys):
    text = _help(capsys, command)
    assert "pre-aggregator, in order (repeatable): " + ", ".join(robust.stages("pre")) in text
    assert "`fortis defences`" in text
    if command == "simulate":
        assert "rules: " + ", ".join(robust.stages("rule")) in text


def test_fortis_defences_shows_every_stage_a_defence_takes_with_its_help(capsys):
    assert main(["defences"]) == 0
    out = capsys.readouterr().out
    pre, rules = robust.stages("pre"), robust.stages("rule")
    for name in pre + rules:
        assert f"\n{robust.stage_help(name)}\n" in out, name
    # Pre-aggregators under their heading, then the rules under theirs, in pipeline order.
    places = [out.index(f"\n{name} (") for name in pre + rules]
    assert places == sorted(places)
    assert out.index(DEFENCE_KINDS["pre"]) < places[0]
    assert places[len(pre) - 1] < out.index(DEFENCE_KINDS["rule"]) < places[len(pre)]
    assert out.rstrip().endswith(RUN_STATE)  # what "per-call state" is in a simulation


def test_fortis_defences_names_and_json(capsys):
    assert main(["defences", "krum", "bucketing"]) == 0
    expected = robust.stage_help("krum") + "\n\n" + robust.stage_help("bucketing") + "\n"
    assert capsys.readouterr().out == expected
    assert main(["defenses", "--json", "multi_krum", "clip"]) == 0
    schemas = json.loads(capsys.readouterr().out)
    assert schemas == [robust.stage_schema("multi_krum"), robust.stage_schema("clip")]
    assert main(["defences", "--json"]) == 0
    names = [s["name"] for s in json.loads(capsys.readouterr().out)]
    assert names == [*robust.stages("pre"), *robust.stages("rule")]


def test_fortis_defences_refuses_an_unknown_name_in_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["defences", "median", "krun"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    known = ", ".join([*robust.stages("pre"), *robust.stages("rule")])
    assert err == f"fortis defences: error: unknown defence stage 'krun'; known: {known}\n"


def test_derived_defaults_live_in_the_config():
    assert SimulationConfig().byzantine == default_byzantine(20) == 4
    assert SimulationConfig(clients=10).byzantine == 2
    assert SimulationConfig(training="dsgd").lr == DEFAULT_LR["dsgd"] == 0.5
    assert SimulationConfig(training="dsgd", lr=0.2).lr == 0.2
    args = build_parser().parse_args(["simulate", "--training", "dsgd", "--clients", "10"])
    cfg = SimulationConfig(**config_kwargs(args, "simulate"))
    assert (cfg.lr, cfg.byzantine) == (0.5, 2)


def test_specs_carry_parameters_and_merge_with_the_repeatable_options():
    argv = ["simulate", "--attack", "alie:z=1.5", "--defence", "bucketing:s=2+krum:m=3"]
    argv += ["--pre", "clip:max_norm=1", "--defence-param", "q=2", "--attack-param", "k=1"]
    kw = config_kwargs(build_parser().parse_args(argv), "simulate")
    assert (kw["attack"], kw["attack_params"]) == ("alie", {"k": 1, "z": 1.5})
    assert (kw["defence"], kw["defence_params"]) == ("krum", {"q": 2, "m": 3})
    assert kw["pre"] == (("clip", {"max_norm": 1}), ("bucketing", {"s": 2}))
    clash = build_parser().parse_args(["simulate", "--attack", "alie:z=1", "--attack-param", "z=2"])
    with pytest.raises(ConfigError, match="z is given twice"):
        config_kwargs(clash, "simulate")


def test_an_attack_spec_has_no_plus(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["simulate", "--attack", "alie+ipm", "--quiet", "--out", str(tmp_path)])
    assert "an attack is one NAME" in capsys.readouterr().err


def test_version(capsys):
    from fortis import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"fortis {__version__}"


# -- rows named by what they ran --------------------------------------------------------------
def _rows(**changes):
    argv = ["simulate"]
    for key, value in changes.items():
        flag = f"--{key.replace('_', '-')}"
        argv += [flag] if value is True else [flag, str(value)]
    args = build_parser().parse_args(argv)
    second = (args.second_attack, {}) if args.second_attack != "none" else None
    return simulate_rows(
        SimulationConfig(**config_kwargs(args, "simulate")),
        second_attack=second,
        second_partition=None if args.second_partition == "same" else args.second_partition,
    )


def _check_names_match_configs(rows):
    for name, cfg in rows:
        assert name == cfg.label()
        attack, _, rest = name.partition(" on ")
        partition, _, defence = rest.partition(", ")
        assert partition == cfg.partition
        assert attack == ("clean" if cfg.byzantine == 0 else cfg.attack_label())
        assert defence.removesuffix(" [secure]") == cfg.defence_label(client_clip=True)
        assert defence.endswith(" [secure]") == cfg.secure
    assert len({name for name, _ in rows}) == len(rows)


def test_attack_none_rows_are_not_named_after_another_attack():
    rows = _rows(attack="none", defence="mean")
    _check_names_match_configs(rows)
    assert [name for name, _ in rows] == [
        "clean on iid, mean",
        "none on iid, mean",
        "clean on dirichlet, mean",
        "alie on dirichlet, mean",
    ]
    assert dict(rows)["none on iid, mean"].attack == "none"


def test_with_no_byzantine_client_every_row_is_clean():
    rows = _rows(attack="none", defence="mean", byzantine=0)
    _check_names_match_configs(rows)
    assert [name for name, _ in rows] == ["clean on iid, mean", "clean on dirichlet, mean"]
    assert all(cfg.attack == "none" for _, cfg in rows)


def test_row_names_carry_parameters_pre_aggregators_clip_and_secure_mode():
    rows = _rows(attack="ipm:eps=0.5", defence="bucketing:s=2+median", clip=5, defence_f="auto")
    _check_names_match_configs(rows)
    assert "ipm(eps=0.5) on iid, client_clip(5)+bucketing(s=2)+median(f=auto)" in dict(rows)
    assert "ipm(eps=0.5) on iid, mean" in dict(rows)  # the baseline neither clips nor filters
    secure = _rows(secure=True, defence="mean", attack="none", byzantine=0)
    _check_names_match_configs(secure)
    assert [name for name, _ in secure] == [
        "clean on iid, mean [secure]",
        "clean on dirichlet, mean [secure]",
    ]


def test_simulate_report_rows_agree_with_their_columns(tmp_path):
    out = tmp_path / "sim"
    argv = ["simulate", "--clients", "10", "--rounds", "1", "--quiet", "--out", str(out)]
    assert main([*argv, "--attack", "none", "--defence", "mean", "--secure"]) == 0
    data = json.loads((out / "results.json").read_text())
    assert sorted(data) == [
        "alie on dirichlet, mean [secure]",
        "clean on dirichlet, mean [secure]",
        "clean on iid, mean [secure]",
        "none on iid, mean [secure]",
    ]
    table = (out / "summary.md").read_text()
    for line in table.splitlines():
        if not line.startswith("| ") or line.startswith("| run"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        name, split, attack, defence, aggregation = cells[:5]
        assert f" on {split}, {defence} [secure]" in name
        assert aggregation.startswith("secure (complete graph")
        word = name.split(" on ")[0]
        assert attack == ("none (all honest)" if word == "clean" else f"{word} (f=2)")


# -- matrix attack specs ----------------------------------------------------------------------
def test_matrix_attacks_take_their_own_parameters():
    base = SimulationConfig(clients=10)
    grid = matrix_configs(
        base, ["adaptive:base=ipm", "adaptive:base=alie"], ["median"], [2], ["iid"]
    )
    assert [cfg.attack_params for _, cfg in grid] == [{"base": "ipm"}, {"base": "alie"}]
    assert [coords["attack"] for coords, _ in grid] == [
        "adaptive(base=ipm)",
        "adaptive(base=alie)",
    ]


def test_attack_param_applies_to_a_single_attack_and_is_ambiguous_with_several():
    one = matrix_configs(SimulationConfig(attack_params={"z": 1}), ["alie"], ["mean"], [2], ["iid"])
    assert one[0][1].attack_params == {"z": 1} and one[0][0]["attack"] == "alie(z=1)"
    with pytest.raises(ConfigError, match=re.escape("--attack-param z=1 is ambiguous")):
        matrix_configs(
            SimulationConfig(attack_params={"z": 1}), ["alie", "ipm"], ["mean"], [2], ["iid"]
        )


def test_matrix_command_runs_parameterised_attacks_side_by_side(tmp_path, capsys):
    out = tmp_path / "m"
    argv = ["matrix", "--clients", "10", "--rounds", "1", "--f", "2", "--quiet", "--out", str(out)]
    argv += ["--attacks", "adaptive:base=ipm,adaptive:base=alie,alie:z=1.5", "--defences", "median"]
    assert main(argv) == 0
    assert "| defence | adaptive(base=ipm) | adaptive(base=alie) | alie(z=1.5) | worst case |" in (
        capsys.readouterr().out
    )
    cells = json.loads((out / "matrix.json").read_text())["cells"]
    assert len(cells) == 3 and all(c["status"] == "completed" for c in cells)
    with pytest.raises(SystemExit):
        main([*argv[:-4], "--attacks", "alie,ipm", "--attack-param", "z=1"])
    assert "ambiguous" in capsys.readouterr().err
