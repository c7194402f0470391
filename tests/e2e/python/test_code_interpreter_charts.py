"""`result.chart` through the Python code-interpreter SDK (its Chart
classes), checked against the figure that made it for each chart type and
scale, and images saved by code shown as results of the cell.

It needs a sandbar server, so it is skipped against a standalone envd.
"""

import base64

import pytest

from conftest import SANDBOX_ENVS, TARGET

pytestmark = pytest.mark.skipif(
    TARGET != "sandbar", reason="needs E2E_TARGET=sandbar (a code-interpreter-v1 sandbox)"
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def ci():
    from e2b_code_interpreter import Sandbox

    sbx = Sandbox.create(envs=SANDBOX_ENVS, timeout=300)
    try:
        yield sbx
    finally:
        sbx.kill()


def no_error(execution, what):
    err = execution.error
    assert err is None, f"{what}: {err.name}: {err.value}\n{err.traceback}"
    return execution


def chart_of(ci, code):
    execution = no_error(ci.run_code(f"import matplotlib.pyplot as plt\n{code}\nplt.show()"), "figure")
    charts = [r for r in execution.results if r.chart is not None]
    assert len(charts) == 1, [list(r.formats()) for r in execution.results]
    assert base64.b64decode(charts[0].png)[:8] == PNG_MAGIC
    assert "chart" in charts[0].formats()
    return charts[0].chart


def test_charts_line(ci):
    from e2b_code_interpreter.charts import ChartType, LineChart, ScaleType

    chart = chart_of(
        ci,
        'plt.plot([1, 2, 3], [1, 4, 9], label="squares")\nplt.title("Growth")\n'
        'plt.xlabel("Time (s)")\nplt.ylabel("Distance [m]")',
    )
    assert isinstance(chart, LineChart)
    assert chart.type == ChartType.LINE
    assert (chart.title, chart.x_label, chart.y_label) == ("Growth", "Time (s)", "Distance [m]")
    assert (chart.x_unit, chart.y_unit) == ("s", "m")
    assert chart.x_scale == ScaleType.LINEAR
    assert [(e.label, e.points) for e in chart.elements] == [("squares", [(1, 1), (2, 4), (3, 9)])]
    assert len(chart.x_ticks) == len(chart.x_tick_labels) > 1


def test_charts_scatter_on_a_log_scale(ci):
    from e2b_code_interpreter.charts import ScaleType, ScatterChart

    chart = chart_of(ci, 'plt.scatter([1, 2, 3], [10, 100, 1000], label="decades")\nplt.yscale("log")')
    assert isinstance(chart, ScatterChart)
    assert chart.y_scale == ScaleType.LOG
    assert [(e.label, e.points) for e in chart.elements] == [("decades", [(1, 10), (2, 100), (3, 1000)])]


def test_charts_bar(ci):
    from e2b_code_interpreter.charts import BarChart

    chart = chart_of(
        ci,
        'plt.bar(["apples", "pears"], [3, 4], label="2023")\n'
        'plt.bar(["apples", "pears"], [1, 2], bottom=[3, 4], label="2024")\nplt.title("Fruit")',
    )
    assert isinstance(chart, BarChart)
    assert chart.title == "Fruit"
    assert [(e.label, e.group, e.value) for e in chart.elements] == [
        ("apples", "2023", 3),
        ("pears", "2023", 4),
        ("apples", "2024", 1),
        ("pears", "2024", 2),
    ]


def test_charts_pie(ci):
    from e2b_code_interpreter.charts import PieChart

    chart = chart_of(ci, 'plt.pie([1, 2, 3], labels=["x", "y", "z"])\nplt.title("Share")')
    assert isinstance(chart, PieChart)
    assert chart.title == "Share"
    assert [(e.label, e.angle, e.radius) for e in chart.elements] == [("x", 60, 1), ("y", 120, 1), ("z", 180, 1)]


def test_charts_box_and_whisker(ci):
    from e2b_code_interpreter.charts import BoxAndWhiskerChart

    chart = chart_of(
        ci,
        'plt.boxplot([[1, 2, 3, 4, 5, 20], [2, 3, 4, 5, 6]], tick_labels=["A", "B"], patch_artist=True)\n'
        'plt.title("Scores")\nplt.ylabel("Score")',
    )
    assert isinstance(chart, BoxAndWhiskerChart)
    assert (chart.title, chart.y_label) == ("Scores", "Score")
    a, b = chart.elements
    assert (a.label, a.min, a.first_quartile, a.median, a.third_quartile, a.max, a.outliers) == (
        "A", 1, 2.25, 3.5, 4.75, 5, [20],
    )
    assert (b.label, b.min, b.median, b.max, b.outliers) == ("B", 2, 4, 6, [])


def test_charts_superchart(ci):
    from e2b_code_interpreter.charts import BarChart, LineChart, SuperChart

    chart = chart_of(
        ci,
        "fig, (left, right) = plt.subplots(1, 2)\n"
        'left.plot([1, 2], [3, 4], label="trend")\nleft.set_title("Left")\n'
        'right.bar(["p", "q"], [5, 6])\nright.set_title("Right")\nfig.suptitle("Both")',
    )
    assert isinstance(chart, SuperChart)
    assert chart.title == "Both"
    left, right = chart.elements
    assert isinstance(left, LineChart) and left.title == "Left"
    assert [(e.label, e.points) for e in left.elements] == [("trend", [(1, 3), (2, 4)])]
    assert isinstance(right, BarChart) and right.title == "Right"
    assert [(e.label, e.value) for e in right.elements] == [("p", 5), ("q", 6)]


def test_charts_datetime_and_categorical_scales(ci):
    from e2b_code_interpreter.charts import ScaleType

    dates = chart_of(ci, "import datetime\nplt.plot([datetime.date(2024, 1, d) for d in (1, 2, 3)], [1, 2, 3])")
    assert dates.x_scale == ScaleType.DATETIME
    assert [x[:10] for x, _ in dates.elements[0].points] == ["2024-01-01", "2024-01-02", "2024-01-03"]
    categories = chart_of(ci, 'plt.plot(["mon", "tue", "wed"], [1, 2, 3])')
    assert categories.x_scale == ScaleType.CATEGORICAL
    assert categories.x_tick_labels == ["mon", "tue", "wed"]


def test_charts_image_saved_to_a_file_is_a_result(ci):
    execution = no_error(
        ci.run_code(
            "import numpy\nfrom PIL import Image\n"
            "image = Image.fromarray((numpy.random.rand(16, 16, 3) * 255).astype('uint8'))\n"
            'image.save("/tmp/sandbar-e2e-py-saved.png")'
        ),
        "save",
    )
    assert len(execution.results) == 1, [list(r.formats()) for r in execution.results]
    assert base64.b64decode(execution.results[0].png)[:8] == PNG_MAGIC
    assert ci.files.read("/tmp/sandbar-e2e-py-saved.png", format="bytes")[:8] == PNG_MAGIC
    buffered = no_error(ci.run_code('import io\nimage.save(io.BytesIO(), format="png")'), "buffer")
    assert buffered.results == []
