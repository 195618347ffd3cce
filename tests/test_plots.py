"""PNG figures of real campaigns: convergence, convergence by method, PBE fits, radio maps."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from hpcopt import config as cfg
from hpcopt import plots
from hpcopt.cli.main import main
from hpcopt.driver import campaign as drv
from hpcopt.driver import reporters
from hpcopt.problems.pbe.data import save_psd
from hpcopt.problems.pbe.problem import simulate
from hpcopt.store.campaign_store import CampaignStore, StoreError
from tests.helpers import fill_disk, tmpfs
from tests.pbe.test_problem import SECTION, TRUTH

SPHERE = {"name": "analytic", "function": "sphere"}
ALL_FAIL = {
    "name": "custom",
    "target": "tests.problems:Flaky",
    "parameters": [{"name": "a", "low": -1, "high": 1}],
    "options": {"fail_above": -2.0},
}
TINY_GA = {"name": "ga", "population": 4, "generations": 2}
GS_ONCE = {"name": "gs", "resolution": 2, "rounds": 1}
METHODS = [
    {"name": "gs", "method": {"name": "gs", "resolution": 4, "rounds": 3}},
    {"name": "ga-0", "seed": 0, "method": {"name": "ga", "population": 6, "generations": 4}},
    {"name": "ga-1", "seed": 1, "method": {"name": "ga", "population": 6, "generations": 4}},
    {"name": "bo", "method": {"name": "bo", "n_trials": 12}},
    {"name": "gd", "method": {"name": "gd", "starts": 2, "steps": 8}},
]


def run_campaign(root: Path, trials: list[dict[str, Any]]) -> CampaignStore:
    doc = {"name": "plots", "output_dir": str(root), "shared": {"problem": SPHERE}}
    campaign = cfg.parse({**doc, "trials": trials})
    store = drv.create(campaign)
    drv.run(campaign, store, reporter=reporters.SilentReporter())
    return store


def pixels(path: Path) -> np.ndarray:
    """The image as ``(height, width, 3)`` 8-bit RGB."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def colours(rgb: np.ndarray) -> int:
    packed = rgb.astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.uint32)
    return len(np.unique(packed))


def saturated(rgb: np.ndarray) -> np.ndarray:
    """Where a pixel is clearly coloured (not white, grey or black)."""
    spread = rgb.max(axis=-1).astype(int) - rgb.min(axis=-1)
    return spread > 60


@pytest.fixture(scope="module")
def sphere_campaign(tmp_path_factory) -> tuple[CampaignStore, list[Path]]:
    store = run_campaign(tmp_path_factory.mktemp("sphere") / "c", METHODS)
    return store, plots.plot_campaign(store.root)


def test_convergence_figures_are_written_to_the_plots_folder_in_a_stable_order(
    sphere_campaign,
) -> None:
    store, written = sphere_campaign
    folder = store.root / "plots"
    assert written == [folder / "convergence.png", folder / "convergence-by-method.png"]


@pytest.mark.parametrize("index", [0, 1])
def test_figures_are_non_trivial_pngs_1200_pixels_wide(sphere_campaign, index: int) -> None:
    _, written = sphere_campaign
    rgb = pixels(written[index])
    assert rgb.shape[1] == 1200 and 450 < rgb.shape[0] < 800
    assert written[index].stat().st_size > 10_000 and colours(rgb) > 50


def test_convergence_lines_are_drawn_in_the_colour_of_their_method(sphere_campaign) -> None:
    _, (convergence, by_method) = sphere_campaign
    for path in (convergence, by_method):
        rgb = pixels(path)
        coloured = rgb[saturated(rgb)].astype(int)
        blue = coloured[:, 2] > coloured[:, 0] + 40  # gd
        green = coloured[:, 1] > coloured[:, 0] + 40  # ga
        assert saturated(rgb).sum() > 2000 and blue.sum() > 200 and green.sum() > 200


def test_best_values_spanning_decades_get_a_log_scale(sphere_campaign) -> None:
    store, _ = sphere_campaign
    traces = [plots._trace(store.read_trial(name)) for name in store.trial_names()]
    figure = plots._convergence_figure(traces, "plots")
    assert [ax.get_yscale() for ax in figure.axes[:2]] == ["log", "log"]


def test_maximised_objectives_keep_a_linear_scale_and_their_running_maximum(tmp_path) -> None:
    maximised = dict(METHODS[0], problem=dict(SPHERE, maximize=True))
    store = run_campaign(tmp_path / "c", [maximised])
    trace = plots._trace(store.read_trial("gs"))
    values = store.read_trial("gs").history.value
    np.testing.assert_array_equal(trace.best, np.maximum.accumulate(values))
    assert plots._convergence_figure([trace], "plots").axes[0].get_yscale() == "linear"


def test_figures_go_to_out_dir_for_the_chosen_trials(tmp_path, sphere_campaign) -> None:
    store, _ = sphere_campaign
    written = plots.plot_campaign(store.root, out_dir=tmp_path / "figs", trials=["gs", "bo"])
    assert [p.parent for p in written] == [tmp_path / "figs"] * 2
    assert all(p.stat().st_size > 10_000 for p in written)


def test_unknown_trial_names_are_refused_naming_them(sphere_campaign) -> None:
    store, _ = sphere_campaign
    with pytest.raises(ValueError, match=r"no trial \['nope'\]"):
        plots.plot_campaign(store.root, trials=["gs", "nope"])


def test_a_folder_that_is_not_a_campaign_raises_store_error(tmp_path) -> None:
    with pytest.raises(StoreError, match="not a campaign folder"):
        plots.plot_campaign(tmp_path)


def test_a_trial_without_a_successful_evaluation_is_left_out_with_a_note(tmp_path, capsys) -> None:
    trials = [
        {"name": "broken", "problem": ALL_FAIL, "method": {"name": "gs", "resolution": 3}},
        METHODS[0],
    ]
    store = run_campaign(tmp_path / "c", trials)
    written = plots.plot_campaign(store.root)
    assert [p.name for p in written] == ["convergence.png", "convergence-by-method.png"]
    assert "trial broken has no successful evaluation" in capsys.readouterr().err


def test_a_campaign_without_any_success_writes_no_figure(tmp_path) -> None:
    trial = {"name": "broken", "problem": ALL_FAIL, "method": {"name": "gs", "resolution": 3}}
    store = run_campaign(tmp_path / "c", [trial])
    assert plots.plot_campaign(store.root) == []


def pbe_trial(name: str, problem: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "problem": problem, "method": TINY_GA}


def test_pbe_fit_shows_data_and_model_at_each_time(tmp_path) -> None:
    store = run_campaign(tmp_path / "c", [pbe_trial("fit", copy.deepcopy(SECTION))])
    written = plots.plot_campaign(store.root)
    assert written[2:] == [store.root / "plots" / "pbe-fit.png"]
    rgb = pixels(written[2])
    red = saturated(rgb) & (rgb[..., 0] > 150) & (rgb[..., 1] < 100)  # the model's lines
    assert rgb.shape[1] == 1200 and written[2].stat().st_size > 10_000
    assert colours(rgb) > 50 and red.sum() > 1000


def test_physics_figures_are_made_only_when_asked(tmp_path) -> None:
    store = run_campaign(tmp_path / "c", [pbe_trial("fit", copy.deepcopy(SECTION))])
    assert [p.name for p in plots.plot_campaign(store.root, physics=False)] == [
        "convergence.png",
        "convergence-by-method.png",
    ]


@pytest.fixture
def data_gone(tmp_path) -> CampaignStore:
    """A campaign of two PBE trials, of which ``gone`` fitted a data file removed since."""
    data = tmp_path / "psd.h5"
    save_psd(data, simulate(SECTION, TRUTH, [0, 120, 600]).psd("q3"))
    measured = dict(copy.deepcopy(SECTION), synthetic=None, data={"path": str(data)})
    trials = [pbe_trial("gone", measured), pbe_trial("fit", copy.deepcopy(SECTION))]
    store = run_campaign(tmp_path / "c", trials)
    data.unlink()
    return store


def test_a_failing_physics_figure_is_raised_after_the_others_are_made(data_gone) -> None:
    with pytest.raises(plots.FiguresFailed) as failure:
        plots.plot_campaign(data_gone.root)
    assert [p.name for p in failure.value.written][2:] == ["pbe-fit.png"]
    assert list(failure.value.failed) == ["pbe-gone.png"]
    assert "trial gone:" in failure.value.failed["pbe-gone.png"]
    assert "psd.h5" in failure.value.failed["pbe-gone.png"]
    assert sorted(p.name for p in data_gone.folder.plots.iterdir()) == [
        "convergence-by-method.png",
        "convergence.png",
        "pbe-fit.png",
    ]


def test_plot_exits_1_naming_each_figure_it_could_not_make_and_why(data_gone, capsys) -> None:
    assert main(["plot", str(data_gone.root)]) == 1
    out, err = capsys.readouterr()
    assert out.split() == [str(data_gone.folder.plots / name) for name in (
        "convergence.png", "convergence-by-method.png", "pbe-fit.png")]  # fmt: skip
    assert "hpcopt plot: no pbe-gone.png: trial gone:" in err and "psd.h5" in err


def test_plot_exits_0_when_every_figure_asked_for_is_made(data_gone, capsys) -> None:
    assert main(["plot", str(data_gone.root), "--trial", "fit"]) == 0
    assert capsys.readouterr().out.split()[-1].endswith("pbe-fit.png")


def test_plot_exits_2_for_an_unknown_trial(data_gone, capsys) -> None:
    assert main(["plot", str(data_gone.root), "--trial", "nope"]) == 2
    assert "no trial ['nope']" in capsys.readouterr().err


def test_a_figure_that_cannot_be_written_leaves_no_temporary_and_raises_store_error(
    tmp_path,
) -> None:
    store = run_campaign(tmp_path / "c", [{"name": "gs", "method": GS_ONCE}])
    with tmpfs("size=64k") as out:
        fill_disk(out)
        with pytest.raises(StoreError, match=r"cannot write .*convergence\.png: No space left"):
            plots.plot_campaign(store.root, out)
        assert os.listdir(out) == ["filler"]


@pytest.mark.sionna
@pytest.mark.slow
def test_coverage_map_of_the_best_point_is_drawn_with_its_aps(tmp_path) -> None:
    radio = {"samples_per_tx": 10_000, "cell_size_m": 0.5, "max_depth": 3}
    coverage = {"name": "coverage", "mode": "1ap", "radio": radio}
    trial = {"name": "map", "problem": coverage, "method": GS_ONCE}
    store = run_campaign(tmp_path / "c", [trial])
    written = plots.plot_campaign(store.root)
    assert written[2:] == [store.root / "plots" / "coverage-map.png"]
    rgb = pixels(written[2])
    assert rgb.shape[1] == 1200 and written[2].stat().st_size > 10_000
    middle = rgb[100:-150, 100:-150]  # inside the map, away from title, legend and colorbar
    assert colours(middle) > 50 and saturated(middle).sum() > 20_000
