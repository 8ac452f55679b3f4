"""The effect catalog and ``check_effect``: defaults filled in, every kind of mistake refused
with a message naming the field."""

from __future__ import annotations

import math

import pytest

from companion.errors import ProjectError
from companion.model.effect_kinds import KINDS, check_effect, check_param, param_names

W = 'tracks[0] "Gtr" effects[1]'


def test_the_catalog_is_complete_and_consistent() -> None:
    for kind in ("gain", "eq3", "compressor", "limiter", "delay", "reverb", "chorus",
                 "phaser", "distortion", "highpass", "lowpass"):
        assert kind in KINDS
    for kind, spec in KINDS.items():
        assert spec.meaning and spec.params, kind
        for name, p in spec.params.items():
            assert p.meaning, (kind, name)
            if p.choices:
                assert p.default in p.choices
            else:
                assert isinstance(p.default, float)
                assert p.min <= p.default <= p.max, (kind, name)


def test_defaults_are_filled_in() -> None:
    got = check_effect({"id": "c1", "kind": "compressor", "params": {"ratio": 4}}, W)
    assert got == {"id": "c1", "kind": "compressor", "bypass": False,
                   "params": {"threshold_db": 0.0, "ratio": 4.0, "attack_ms": 1.0,
                              "release_ms": 100.0, "makeup_db": 0.0}}
    assert isinstance(got["params"]["ratio"], float)
    assert check_effect({"id": "r", "kind": "reverb", "bypass": True}, W)["bypass"] is True
    assert check_effect({"id": "l", "kind": "ladder", "params": {"mode": "hpf12"}},
                        W)["params"]["mode"] == "hpf12"


def test_param_names() -> None:
    assert param_names("gain") == ("db",)
    assert "mid_q" in param_names("eq3")
    with pytest.raises(KeyError):
        param_names("wah")


@pytest.mark.parametrize(("spec", "where", "words"), [
    ({"id": "x", "kind": "wah"}, W + " > kind", "unknown effect kind 'wah'"),
    ({"id": "x", "kind": "gain", "params": {"gain": 1}}, W + " > params > gain",
     "no parameter 'gain'"),
    ({"id": "x", "kind": "gain", "params": {"db": "6"}}, W + " > params > db", "not a number"),
    ({"id": "x", "kind": "gain", "params": {"db": True}}, W + " > params > db",
     "not a number"),
    ({"id": "x", "kind": "gain", "params": {"db": math.nan}}, W + " > params > db",
     "not a finite number"),
    ({"id": "x", "kind": "gain", "params": {"db": math.inf}}, W + " > params > db",
     "not a finite number"),
    ({"id": "x", "kind": "compressor", "params": {"ratio": 0.5}},
     W + " > params > ratio", "out of range 1..50"),
    ({"id": "x", "kind": "delay", "params": {"feedback": 1.0}},
     W + " > params > feedback", "out of range"),
    ({"id": "x", "kind": "ladder", "params": {"mode": "notch"}}, W + " > params > mode",
     "not one of"),
    ({"id": "x", "kind": "gain", "params": [1]}, W + " > params", "object"),
    ({"id": "x", "kind": "gain", "bypass": 1}, W + " > bypass", "true or false"),
    ({"id": "", "kind": "gain"}, W + " > id", "non-empty"),
    ({"id": "a.b", "kind": "gain"}, W + " > id", "'.'"),
    ({"kind": "gain"}, W + " > id", "non-empty"),
    ({"id": "x", "kind": "gain", "wet": 1}, W + " > wet", "unknown field"),
    ("gain", W, "an effect is an object"),
])
def test_mistakes_are_refused_naming_the_field(spec: object, where: str, words: str) -> None:
    with pytest.raises(ProjectError) as e:
        check_effect(spec, W)
    assert e.value.where == where
    assert words in e.value.problem


def test_range_message_has_the_unit() -> None:
    with pytest.raises(ProjectError, match=r"out of range 20\.\.20000 Hz"):
        check_effect({"id": "x", "kind": "highpass", "params": {"cutoff_hz": 5}}, W)


def test_check_param_for_automation() -> None:
    assert check_param("eq3", "mid_gain_db", -3, "lane") == -3.0
    with pytest.raises(ProjectError, match="no parameter"):
        check_param("eq3", "bass", 0.0, "lane")
    with pytest.raises(ProjectError, match="unknown effect kind"):
        check_param("flanger", "rate_hz", 1.0, "lane")
