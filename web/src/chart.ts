// Line charts drawn as SVG by hand: three small charts do not justify a
// charting library in the binary.

const NS = 'http://www.w3.org/2000/svg'
const W = 600
const H = 150
const PAD = { left: 56, right: 10, top: 10, bottom: 22 }

export interface Series {
  label: string
  className: string
  /** [unix seconds, value] */
  points: [number, number][]
}

export interface ChartSpec {
  id: string
  title: string
  /** The top of the value axis (at least the largest value is shown). */
  max?: number
  format: (v: number) => string
  series: Series[]
  /** The time window shown, unix seconds. */
  from: number
  to: number
}

function el<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number>): SVGElementTagNameMap[K] {
  const e = document.createElementNS(NS, tag)
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v))
  return e
}

/** Draws (or redraws, in place) the chart into `box`. */
export function drawChart(box: HTMLElement, spec: ChartSpec): void {
  const all = spec.series.flatMap((s) => s.points.map((p) => p[1]))
  const top = Math.max(spec.max ?? 0, ...all, 1e-9)
  const span = Math.max(spec.to - spec.from, 1)
  const x = (t: number) => PAD.left + ((t - spec.from) / span) * (W - PAD.left - PAD.right)
  const y = (v: number) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom)

  const svg = el('svg', {
    viewBox: `0 0 ${W} ${H}`,
    class: 'chart',
    role: 'img',
    'aria-label': spec.title,
    id: spec.id,
    'data-points': Math.max(0, ...spec.series.map((s) => s.points.length)),
  })
  // Grid: the axis, half and top.
  for (const frac of [0, 0.5, 1]) {
    const gy = y(top * frac)
    svg.appendChild(el('line', { x1: PAD.left, x2: W - PAD.right, y1: gy, y2: gy, class: 'grid' }))
    const label = el('text', { x: PAD.left - 6, y: gy + 4, class: 'axis', 'text-anchor': 'end' })
    label.textContent = spec.format(top * frac)
    svg.appendChild(label)
  }
  for (const [t, anchor] of [
    [spec.from, 'start'],
    [spec.to, 'end'],
  ] as const) {
    const label = el('text', { x: x(t), y: H - 6, class: 'axis', 'text-anchor': anchor })
    label.textContent = new Date(t * 1000).toLocaleTimeString()
    svg.appendChild(label)
  }
  for (const s of spec.series) {
    if (s.points.length === 0) continue
    const d = s.points.map(([t, v], i) => `${i ? 'L' : 'M'}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join('')
    svg.appendChild(el('path', { d, class: `line ${s.className}`, 'data-series': s.label }))
    if (s.points.length === 1) {
      const [t, v] = s.points[0] as [number, number]
      svg.appendChild(el('circle', { cx: x(t), cy: y(v), r: 3, class: `dot ${s.className}` }))
    }
  }

  const legend = document.createElement('div')
  legend.className = 'legend'
  const title = document.createElement('strong')
  title.textContent = spec.title
  legend.appendChild(title)
  for (const s of spec.series) {
    const last = s.points[s.points.length - 1]
    const item = document.createElement('span')
    item.className = `key ${s.className}`
    item.textContent = `${s.label}: ${last ? spec.format(last[1]) : '–'}`
    legend.appendChild(item)
  }
  box.replaceChildren(legend, svg)
}
