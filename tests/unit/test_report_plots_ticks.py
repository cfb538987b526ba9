"""A log axis that spans less than a decade is labelled up to its top (report plots, issue #12 item 7)."""

from __future__ import annotations

from llem_ray.results.report_plots import plain_log_axis, pyplot


def _labelled_values(low: float, high: float) -> list[float]:
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.set_yscale("log")
    ax.set_ylim(low, high)
    plain_log_axis(ax.yaxis, ax.get_ylim(), plt)
    fig.canvas.draw()
    ticks = [*ax.yaxis.get_majorticklabels(), *ax.yaxis.get_minorticklabels()]
    values = sorted(float(t.get_text()) for t in ticks if t.get_text() and low <= t.get_position()[1] <= high)
    plt.close(fig)
    return values


def test_throughput_axis_between_ten_thousand_and_its_top_is_labelled() -> None:
    values = _labelled_values(5_000, 17_500)
    assert any(10_000 < v <= 17_500 for v in values), values
    assert values == sorted(set(values))


def test_energy_axis_top_of_a_decade_is_labelled() -> None:
    values = _labelled_values(0.018, 0.19)
    assert any(0.1 < v <= 0.19 for v in values), values


def test_a_wide_axis_labels_decades_only() -> None:
    values = _labelled_values(1.0, 10_000.0)
    assert set(values) <= {1.0, 10.0, 100.0, 1000.0, 10_000.0}, values
