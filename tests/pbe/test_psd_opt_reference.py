"""The PSD_opt reference (tests/pbe/psd_opt_reference.py) against hand-computed values,
closed forms and conservation laws, so that it can be trusted as a fixture for hpcopt."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad

from tests.pbe import psd_opt_reference as ref

# R01 with v01 = 4/3 pi R01^3 = 1: volumes in units of the grid's first edge
UNIT_R01 = (3 / (4 * math.pi)) ** (1 / 3)
FRAGMENTS = [  # BREAKFVAL, pl_v, pl_q, fragments per break, fragment volume / parent volume
    (1, 2.0, 1.0, 4.0, 2.0),  # PSD_opt's 1-D "hypervolume" breakage doubles the volume
    (2, 2.0, 1.0, 2.0, 1.0),
    (3, 2.0, 1.0, 2.0, 1.0),
    (3, 3.5, 0.6, 3.5, 1.0),
    (4, 1.0, 1.0, 2.0, 1.0),
    (4, 0.4, 1.0, 1.4 / 0.4, 1.0),
    (5, 2.0, 1.0, 2.0, 1.0),
    (5, 0.7, 1.0, 2.7 / 0.7, 1.0),
]
PROCESS_CASES = {
    "agglomeration": dict(COLEVAL=4, CORR_BETA=0.05),
    "breakage": dict(BREAKRVAL=2, pl_P1=0.005, BREAKFVAL=5, pl_v=0.7),
    "mix": dict(COLEVAL=1, CORR_BETA=0.05, BREAKRVAL=3, pl_P1=0.01, pl_P2=1.2, BREAKFVAL=4,
                pl_v=0.6),
}  # fmt: skip


def test_grid_matches_hand_computed_values() -> None:
    V_e, V, R = ref.geo_grid(4, 2.0, UNIT_R01)
    np.testing.assert_allclose(V_e, [-1.0, 1.0, 2.0, 4.0, 8.0], rtol=1e-14)
    np.testing.assert_allclose(V, [0.0, 1.5, 3.0, 6.0], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(
        R, [0.0, *(3 * np.array([1.5, 3.0, 6.0]) / (4 * math.pi)) ** (1 / 3)]
    )


def test_agglomeration_limit_defaults_to_the_class_below_the_last() -> None:
    assert ref.agglomeration_limit(12) == 11  # aggl_crit = 1e3
    assert ref.agglomeration_limit(12, 5) == 6
    assert ref.agglomeration_limit(12, 11) == 11


@pytest.mark.parametrize(
    ("COLEVAL", "beta"),
    [
        (1, lambda r1, r2: 0.3 * 2.0 * (r1 + r2) ** 3),  # no 2.3: calc_beta's form
        (2, lambda r1, r2: 0.3 * 2 * 1.38e-23 * 293 * (r1 + r2) ** 2 / (3e-3 * r1 * r2)),
        (3, lambda r1, r2: 0.3),
        (4, lambda r1, r2: 0.3 * 4 * math.pi * (r1**3 + r2**3) / 3),
    ],
)
def test_agglomeration_matrix_follows_the_collision_frequency(COLEVAL, beta) -> None:
    _, _, R = ref.geo_grid(5, 2.0, 1e-6)
    k = ref.Kernels(COLEVAL=COLEVAL, CORR_BETA=0.3, G=2.0, alpha_prim=0.5, V_unit=1e-3)
    F_M = ref.agglomeration_matrix(R, k)
    assert F_M.shape == (4, 4)
    assert not F_M[0].any() and not F_M[:, 0].any()
    expected = [[beta(R[a], R[i]) * 0.5 / 1e-3 for i in range(1, 4)] for a in range(1, 4)]
    np.testing.assert_allclose(F_M[1:, 1:], expected, rtol=1e-14)


def test_size_dependent_efficiency_is_normalised_by_the_primary_particle() -> None:
    _, _, R = ref.geo_grid(5, 2.0, 1e-6)
    k = ref.Kernels(COLEVAL=3, SIZEEVAL=2, X_SEL=0.4, Y_SEL=0.9)
    F_M = ref.agglomeration_matrix(R, k)
    assert F_M[1, 1] == pytest.approx(1.0, rel=1e-14)  # R[1]**2, not R01**2, is the unit
    lam = R[1] / R[3]
    corr = math.exp(-0.4 * (1 - lam) ** 2) / (R[1] * R[3] / R[1] ** 2) ** 0.9
    assert F_M[1, 3] == pytest.approx(corr, rel=1e-14)


@pytest.mark.parametrize(
    ("BREAKRVAL", "rate"),
    [(1, lambda V: 0.3 + 0 * V), (2, lambda V: 0.3 * V), (3, lambda V: 0.3 * 2.0 * V**1.5),
     (4, lambda V: 0.3 * 2.0 * V**1.5)],
)  # fmt: skip
def test_breakage_rates_follow_the_kernel_and_spare_class_0(BREAKRVAL, rate) -> None:
    _, V, _ = ref.geo_grid(5, 2.0, UNIT_R01)
    B_R = ref.breakage_rates(V, ref.Kernels(BREAKRVAL=BREAKRVAL, pl_P1=0.3, pl_P2=1.5, G=2.0))
    assert B_R[0] == 0.0
    np.testing.assert_allclose(B_R[1:], rate(V[1:]), rtol=1e-14)


@pytest.mark.parametrize(("BREAKFVAL", "pl_v", "pl_q", "count", "volume"), FRAGMENTS)
def test_fragment_integrals_sum_to_the_fragment_count(BREAKFVAL, pl_v, pl_q, count, volume):
    V_e, V, _ = ref.geo_grid(10, 2.0, 1e-6)
    int_B_F, _ = ref.fragment_integrals(V, V_e, BREAKFVAL, pl_v, pl_q)
    np.testing.assert_allclose(int_B_F[:, 1:].sum(axis=0), count, rtol=1e-13)
    assert not np.tril(int_B_F, -1).any() and not int_B_F[:, 0].any()


@pytest.mark.parametrize(("BREAKFVAL", "pl_v", "pl_q", "count", "volume"), FRAGMENTS)
def test_fragment_volume_integrals_sum_to_the_parent_volume(BREAKFVAL, pl_v, pl_q, count, volume):
    V_e, V, _ = ref.geo_grid(10, 2.0, 1e-6)
    _, intx_B_F = ref.fragment_integrals(V, V_e, BREAKFVAL, pl_v, pl_q)
    np.testing.assert_allclose(intx_B_F[:, 1:].sum(axis=0), volume * V[1:], rtol=1e-13)


def volume_density(x: float, *args) -> float:
    return x * ref.fragment_density(x, *args)


@pytest.mark.parametrize(("BREAKFVAL", "pl_v", "pl_q", "count", "volume"), FRAGMENTS)
def test_fragment_integrals_equal_quadrature_over_each_cell(BREAKFVAL, pl_v, pl_q, count, volume):
    # v01 = 1, so quad's absolute tolerance is not what stops it (it is in SI units)
    V_e, V, _ = ref.geo_grid(6, 2.0, UNIT_R01)
    int_B_F, intx_B_F = ref.fragment_integrals(V, V_e, BREAKFVAL, pl_v, pl_q)
    lower = [0.0, *V_e[1:-1]]
    for i in range(1, 6):
        for a in range(i + 1):
            upper = V[i] if a == i else V_e[a + 1]
            args = (V[i], BREAKFVAL, pl_v, pl_q)
            n = quad(ref.fragment_density, lower[a], upper, args=args, epsabs=0, epsrel=1e-12)
            x = quad(volume_density, lower[a], upper, args=args, epsabs=0, epsrel=1e-12)
            assert int_B_F[a, i] == pytest.approx(n[0], rel=1e-10)
            assert intx_B_F[a, i] == pytest.approx(x[0], rel=1e-10)


def test_a_birth_on_a_pivot_stays_on_it() -> None:
    V = np.array([0.0, 1.5, 3.0, 6.0])
    B = ref.place_births(np.array([0.0, 0.0, 2.0, 0.0]), np.array([0.0, 0.0, 6.0, 0.0]), V)
    np.testing.assert_allclose(B, [0.0, 0.0, 2.0, 0.0])


def test_a_birth_between_pivots_is_shared_keeping_number_and_volume() -> None:
    V = np.array([0.0, 1.5, 3.0, 6.0])
    below = ref.place_births(np.array([0.0, 0.0, 1.0, 0.0]), np.array([0.0, 0.0, 2.5, 0.0]), V)
    np.testing.assert_allclose(below, [0.0, 1 / 3, 2 / 3, 0.0], rtol=1e-14)
    above = ref.place_births(np.array([0.0, 0.0, 1.0, 0.0]), np.array([0.0, 0.0, 3.75, 0.0]), V)
    np.testing.assert_allclose(above, [0.0, 0.0, 0.75, 0.25], rtol=1e-14)


def test_fragments_below_the_first_edge_are_partly_counted_in_the_zero_volume_class() -> None:
    model = ref.build_model(4, 2.0, UNIT_R01, "breakage", BREAKRVAL=1, pl_P1=1.0, BREAKFVAL=2)
    dNdt = model.dNdt(np.array([0.0, 1.0, 0.0, 0.0]))
    # class 1 (1.5) breaks into 2 fragments uniform on [0, 1.5]: 2/3 of them in cell 0
    # (mean 0.5, a third of the way to pivot 1.5), 1/3 in cell 1 (mean 1.25)
    cell0, cell1 = 4 / 3, 2 / 3
    expected_0 = cell0 * (1 - 0.5 / 1.5) + cell1 * (1 - 1.25 / 1.5)
    np.testing.assert_allclose(dNdt, [expected_0, 1.0 - expected_0, 0, 0], rtol=1e-14, atol=0)


def test_pairs_beyond_the_agglomeration_limit_do_not_agglomerate() -> None:
    # agg_crit = 3: products must fall below V_e[3] = 4 (V = 0, 1.5, 3, 6, 12, 24)
    model = ref.build_model(6, 2.0, UNIT_R01, "agglomeration", COLEVAL=3, aggl_crit=2)
    assert model.agg_crit == 3
    np.testing.assert_allclose(model.dNdt(np.array([0, 0, 1.0, 0, 0, 0])), 0.0)  # 3+3 = 6
    np.testing.assert_allclose(model.dNdt(np.array([0, 1.0, 0, 0, 0, 0])), [0, -1, 0.5, 0, 0, 0])


def test_mix_adds_both_mechanisms_to_the_cells_before_placing_them() -> None:
    kernels = {**PROCESS_CASES["agglomeration"], **PROCESS_CASES["breakage"]}
    models = {p: ref.build_model(8, 2.0, UNIT_R01, p, **kernels) for p in PROCESS_CASES}
    N = np.random.default_rng(5).uniform(0.0, 1.0, 8)
    both = [
        a + b for a, b in zip(*(models[p].cell_births(N) for p in ("agglomeration", "breakage")))
    ]
    for mixed, summed in zip(models["mix"].cell_births(N), both):
        np.testing.assert_allclose(mixed, summed, rtol=1e-14)


@pytest.mark.parametrize("process", ["agglomeration", "breakage", "mix"])
def test_monodisperse_start_sits_where_psd_opt_puts_it(process) -> None:
    N0 = ref.initial_state(11, process, 7.0)
    assert N0.sum() == 7.0
    assert N0[{"agglomeration": 1, "breakage": 10, "mix": 6}[process]] == 7.0


@pytest.mark.parametrize("process", ["agglomeration", "breakage", "mix"])
def test_total_volume_is_conserved(process) -> None:
    t = np.linspace(0.0, 20.0, 5)
    V, _, N = ref.solve_psd_opt(12, 2.0, UNIT_R01, t, 1.0, process, **PROCESS_CASES[process])
    volume = N @ V
    assert np.max(np.abs(volume / volume[0] - 1)) < 1e-12  # measured 3e-15 .. 6e-15
    assert np.max(np.abs(N[-1] - N[0])) > 0.1  # the population did change


def test_an_arbitrary_start_is_conserved_in_volume_too() -> None:
    N0 = np.random.default_rng(3).uniform(0.0, 1.0, 10)
    V, V_e, N = ref.solve_psd_opt(10, 3.0, UNIT_R01, [0.0, 5.0, 10.0], N0, **PROCESS_CASES["mix"])
    assert N.shape == (3, 10) and V_e.shape == (11,)
    np.testing.assert_array_equal(N[0], N0)
    assert (N @ V)[-1] == pytest.approx(N0 @ V, rel=1e-12)


def test_constant_kernel_number_follows_the_closed_form() -> None:
    # Fixed-pivot placement keeps the number of each birth, so the discrete sum obeys
    # dN/dt = -beta N^2 / 2 exactly while no pair reaches the limit V_e[11] = 1024 v01 (the
    # mean volume only grows to 15 here); what is left is the integrator's error: measured
    # 4e-12 at rtol 1e-10, the bound leaves room for it to accumulate over the steps.
    t = np.linspace(0.0, 18.0, 7)
    _, _, N = ref.solve_psd_opt(12, 2.0, UNIT_R01, t, 1.0, "agglomeration", COLEVAL=3)
    np.testing.assert_allclose(N.sum(axis=1), 1.0 / (1.0 + t / 2), rtol=1e-9)
