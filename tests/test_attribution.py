"""Kepler-style attribution of a node's plug energy to the tasks that shared it, and coverage."""

from __future__ import annotations

import math

import pytest

from edgelab.services.power.attribution import Task, attribute, cumulative_at


def constant(watts: float, t0: float = 0.0, t1: float = 10.0, step: float = 1.0):
    n = int((t1 - t0) / step)
    return [(t0 + i * step, watts * i * step) for i in range(n + 1)]


def test_interpolates_cumulative_energy_and_refuses_outside_the_samples():
    ss = [(0.0, 0.0), (2.0, 10.0), (4.0, 30.0)]
    assert cumulative_at(ss, 1.0) == 5.0 and cumulative_at(ss, 3.0) == 20.0 and cumulative_at(ss, 4.0) == 30.0
    assert cumulative_at(ss, -0.1) is None and cumulative_at(ss, 4.1) is None and cumulative_at(ss[:1], 0) is None


def test_overlapping_tasks_share_by_cpu_rate_and_shares_add_up():
    # 10 W; a: [1,5] at 1 core, b: [3,7] at half a core; node busy [1,7] = 60 J, idle elsewhere
    a = attribute({"n": constant(10.0)}, [Task("a", "n", 1, 5, 4.0), Task("b", "n", 3, 7, 2.0)])
    assert a.energy_j["a"] == pytest.approx(20 + 20 * 2 / 3)     # alone 2 s, then 2/3 of the shared 2 s
    assert a.energy_j["b"] == pytest.approx(20 * 1 / 3 + 20)
    assert a.energy_j["a"] + a.energy_j["b"] == pytest.approx(a.node_j["n"]) == pytest.approx(60.0)
    assert a.idle_j["n"] == 0.0 and a.coverage == 1.0 and a.per_task_mean() == pytest.approx(30.0)


def test_two_equal_functions_at_once_each_get_half_not_the_whole_draw():
    # the MicroFaaS "whole draw during my run" view would charge each 40 J here
    a = attribute({"w": constant(10.0)}, [Task("f1", "w", 2, 6, 4.0), Task("f2", "w", 2, 6, 4.0)])
    assert a.energy_j == {"f1": pytest.approx(20.0), "f2": pytest.approx(20.0)}


def test_gaps_are_idle_and_zero_cpu_tasks_split_evenly():
    a = attribute({"w": constant(5.0)}, [Task("x", "w", 1, 2, 0.0), Task("y", "w", 1, 2, 0.0), Task("z", "w", 6, 8, 1.0)])
    assert a.energy_j["x"] == a.energy_j["y"] == pytest.approx(2.5)
    assert a.energy_j["z"] == pytest.approx(10.0)
    assert a.idle_j["w"] == pytest.approx(20.0)                    # [2, 6]: nothing ran


def test_missing_energy_lowers_coverage_and_withholds_the_mean():
    a = attribute({"w1": constant(2.0)},
                  [Task("ok", "w1", 1, 2, 1.0), Task("late", "w1", 9, 12, 1.0), Task("other", "w2", 1, 2, 1.0)])
    assert a.energy_j["ok"] == pytest.approx(2.0)
    assert a.energy_j["late"] is None and a.energy_j["other"] is None
    assert a.coverage == pytest.approx(1 / 3)
    assert a.per_task_mean() is None
    assert math.isnan(attribute({}, []).coverage)
