// The code-interpreter SDK's `result.chart`: the data of a matplotlib figure
// (E2B's `e2b-charts` extractor in the kernel), beside its PNG, checked
// against the figure that made it for each chart type and scale; and images
// that code saves to a file, shown as results of the cell. It needs a
// sandbar server, so it is skipped against a standalone envd.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox } from '@e2b/code-interpreter'
import { SANDBOX_ENVS, TARGET } from './helpers.mjs'

const skip = TARGET !== 'sandbar' && 'needs E2E_TARGET=sandbar (a code-interpreter-v1 sandbox)'
const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])

function assertNoError(execution, what) {
  assert.equal(
    execution.error,
    undefined,
    `${what}: ${execution.error?.name}: ${execution.error?.value}\n${execution.error?.traceback ?? ''}`,
  )
}

function assertPng(b64, what) {
  const png = Buffer.from(b64 ?? '', 'base64')
  assert.deepEqual(png.subarray(0, 8), PNG_MAGIC, `${what}: not a PNG`)
}

describe('code interpreter: chart data', { skip }, () => {
  let sandbox
  before(async () => {
    sandbox = await Sandbox.create({ envs: SANDBOX_ENVS, timeoutMs: 5 * 60_000 })
  })
  after(async () => {
    await sandbox?.kill()
  })

  /** Runs figure code and returns the one result with a chart (which has the PNG too). */
  async function chartOf(code) {
    const execution = await sandbox.runCode(`import matplotlib.pyplot as plt\n${code}\nplt.show()`)
    assertNoError(execution, 'figure')
    const charts = execution.results.filter((r) => r.chart)
    assert.equal(charts.length, 1, `results: ${JSON.stringify(execution.results.map((r) => r.formats()))}`)
    assertPng(charts[0].png, 'the chart result')
    // (The JS SDK's formats() leaves `chart` out; the raw result has it.)
    assert.equal(typeof charts[0].raw.chart, 'object')
    return charts[0].chart
  }

  it('describes a line chart: title, labels, units, points and ticks', async () => {
    const chart = await chartOf(
      'plt.plot([1, 2, 3], [1, 4, 9], label="squares")\nplt.plot([1, 2, 3], [1, 2, 3], label="linear")\n' +
        'plt.title("Growth")\nplt.xlabel("Time (s)")\nplt.ylabel("Distance [m]")',
    )
    assert.equal(chart.type, 'line')
    assert.equal(chart.title, 'Growth')
    assert.equal(chart.x_label, 'Time (s)')
    assert.equal(chart.y_label, 'Distance [m]')
    assert.equal(chart.x_unit, 's')
    assert.equal(chart.y_unit, 'm')
    assert.equal(chart.x_scale, 'linear')
    assert.equal(chart.y_scale, 'linear')
    assert.deepEqual(
      chart.elements.map((e) => [e.label, e.points]),
      [
        ['squares', [[1, 1], [2, 4], [3, 9]]],
        ['linear', [[1, 1], [2, 2], [3, 3]]],
      ],
    )
    assert.ok(chart.y_ticks.length > 1 && chart.y_ticks.length === chart.y_tick_labels.length)
    assert.ok(Math.min(...chart.y_ticks) <= 1 && Math.max(...chart.y_ticks) >= 9, JSON.stringify(chart.y_ticks))
  })

  it('describes a scatter chart on a log scale', async () => {
    const chart = await chartOf(
      'plt.scatter([1, 2, 3], [10, 100, 1000], label="decades")\nplt.yscale("log")\nplt.title("Orders")',
    )
    assert.equal(chart.type, 'scatter')
    assert.equal(chart.title, 'Orders')
    assert.equal(chart.y_scale, 'log')
    assert.equal(chart.x_scale, 'linear')
    assert.deepEqual(chart.elements, [{ label: 'decades', points: [[1, 10], [2, 100], [3, 1000]] }])
  })

  it('describes a bar chart: bars by label and group', async () => {
    const chart = await chartOf(
      'plt.bar(["apples", "pears"], [3, 4], label="2023")\n' +
        'plt.bar(["apples", "pears"], [1, 2], bottom=[3, 4], label="2024")\n' +
        'plt.title("Fruit")\nplt.xlabel("Kind")\nplt.ylabel("Crates")',
    )
    assert.equal(chart.type, 'bar')
    assert.equal(chart.title, 'Fruit')
    assert.equal(chart.x_label, 'Kind')
    assert.equal(chart.y_label, 'Crates')
    assert.deepEqual(chart.elements, [
      { label: 'apples', group: '2023', value: 3 },
      { label: 'pears', group: '2023', value: 4 },
      { label: 'apples', group: '2024', value: 1 },
      { label: 'pears', group: '2024', value: 2 },
    ])
  })

  it('describes a pie chart: slices with their angles', async () => {
    const chart = await chartOf('plt.pie([1, 2, 3], labels=["x", "y", "z"], radius=1.5)\nplt.title("Share")')
    assert.equal(chart.type, 'pie')
    assert.equal(chart.title, 'Share')
    assert.deepEqual(chart.elements, [
      { label: 'x', angle: 60, radius: 1.5 },
      { label: 'y', angle: 120, radius: 1.5 },
      { label: 'z', angle: 180, radius: 1.5 },
    ])
  })

  it('describes a box-and-whisker chart: quartiles and outliers', async () => {
    const chart = await chartOf(
      'plt.boxplot([[1, 2, 3, 4, 5, 20], [2, 3, 4, 5, 6]], tick_labels=["A", "B"], patch_artist=True)\n' +
        'plt.title("Scores")\nplt.xlabel("Class")\nplt.ylabel("Score")',
    )
    assert.equal(chart.type, 'box_and_whisker')
    assert.equal(chart.title, 'Scores')
    assert.equal(chart.x_label, 'Class')
    assert.deepEqual(chart.elements, [
      { label: 'A', min: 1, first_quartile: 2.25, median: 3.5, third_quartile: 4.75, max: 5, outliers: [20] },
      { label: 'B', min: 2, first_quartile: 3, median: 4, third_quartile: 5, max: 6, outliers: [] },
    ])
  })

  it('describes a figure of several charts as a superchart', async () => {
    const chart = await chartOf(
      'fig, (left, right) = plt.subplots(1, 2)\n' +
        'left.plot([1, 2], [3, 4], label="trend")\nleft.set_title("Left")\n' +
        'right.bar(["p", "q"], [5, 6], label="counts")\nright.set_title("Right")\n' +
        'fig.suptitle("Both")',
    )
    assert.equal(chart.type, 'superchart')
    assert.equal(chart.title, 'Both')
    assert.deepEqual(
      chart.elements.map((e) => [e.type, e.title]),
      [
        ['line', 'Left'],
        ['bar', 'Right'],
      ],
    )
    assert.deepEqual(chart.elements[0].elements, [{ label: 'trend', points: [[1, 3], [2, 4]] }])
    assert.deepEqual(
      chart.elements[1].elements.map((e) => [e.label, e.value]),
      [
        ['p', 5],
        ['q', 6],
      ],
    )
  })

  it('gives datetime and categorical scales', async () => {
    const dates = await chartOf(
      'import datetime\nplt.plot([datetime.date(2024, 1, d) for d in (1, 2, 3)], [1, 2, 3], label="daily")',
    )
    assert.equal(dates.x_scale, 'datetime')
    assert.deepEqual(
      dates.elements[0].points.map(([x]) => x.slice(0, 10)),
      ['2024-01-01', '2024-01-02', '2024-01-03'],
    )
    const categories = await chartOf('plt.plot(["mon", "tue", "wed"], [1, 2, 3])')
    assert.equal(categories.x_scale, 'categorical')
    assert.deepEqual(categories.x_tick_labels, ['mon', 'tue', 'wed'])
    assert.deepEqual(categories.elements[0].points, [['mon', 1], ['tue', 2], ['wed', 3]])
  })

  it('adds no chart to images that are not figures, and keeps display() as it was', async () => {
    const execution = await sandbox.runCode('from IPython.display import display\ndisplay({"a": 1}, raw=False)\n42')
    assertNoError(execution, 'display')
    assert.ok(execution.results.every((r) => !r.chart), JSON.stringify(execution.results.map((r) => r.formats())))
    assert.equal(execution.text, '42')
  })

  it('shows a PIL image saved to a file as a result of the cell', async () => {
    const execution = await sandbox.runCode(
      'import numpy\nfrom PIL import Image\n' +
        "pixels = (numpy.random.rand(16, 16, 3) * 255).astype('uint8')\n" +
        "image = Image.fromarray(pixels).convert('RGBA')\n" +
        'image.save("/tmp/sandbar-e2e-saved.png")\nprint("saved")',
    )
    assertNoError(execution, 'save')
    assert.deepEqual(execution.logs.stdout, ['saved\n'])
    assert.equal(execution.results.length, 1, JSON.stringify(execution.results.map((r) => r.formats())))
    assertPng(execution.results[0].png, 'the saved image')
    assert.equal(execution.results[0].isMainResult, false)
    // The file was written as asked.
    const file = await sandbox.files.read('/tmp/sandbar-e2e-saved.png', { format: 'bytes' })
    assert.deepEqual(Buffer.from(file).subarray(0, 8), PNG_MAGIC)
    // Saving to a buffer shows nothing.
    const buffer = await sandbox.runCode('import io\nimage.save(io.BytesIO(), format="png")')
    assertNoError(buffer, 'save to a buffer')
    assert.deepEqual(buffer.results, [])
  })

  it('shows a PIL image on show() and as a value', async () => {
    const shown = await sandbox.runCode(
      "from PIL import Image\nimage = Image.new('RGB', (8, 8), 'red')\nimage.show()\nprint('done')",
    )
    assertNoError(shown, 'show')
    assert.equal(shown.results.length, 1, JSON.stringify(shown.results.map((r) => r.formats())))
    assertPng(shown.results[0].png, 'the shown image')
    const value = await sandbox.runCode('image')
    assertPng(value.results[0]?.png, 'the image as a value')
  })

  it('shows a matplotlib figure saved to a file once, with its chart', async () => {
    const execution = await sandbox.runCode(
      'import matplotlib.pyplot as plt\nplt.plot([1, 2], [2, 1], label="down")\nplt.savefig("/tmp/sandbar-e2e-figure.png")',
    )
    assertNoError(execution, 'savefig')
    assert.equal(execution.results.length, 1, JSON.stringify(execution.results.map((r) => r.formats())))
    assertPng(execution.results[0].png, 'the figure')
    assert.equal(execution.results[0].chart?.type, 'line')
    const file = await sandbox.files.read('/tmp/sandbar-e2e-figure.png', { format: 'bytes' })
    assert.deepEqual(Buffer.from(file).subarray(0, 8), PNG_MAGIC)
  })
})
