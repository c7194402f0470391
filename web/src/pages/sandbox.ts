// One sandbox: its record, CPU/memory/disk over time, ports, a terminal,
// files, logs, and the lifecycle buttons. The API calls go through the
// dashboard's relay; envd (terminal, files, ports) is reached by the
// official SDK at the sandbox's own URL with the sandbox's envd token,
// which `connect` hands to the owner's team.
import { Sandbox } from 'e2b'
import { ApiError, apiUrl, call, type MetricSample, type SandboxDetail } from '../api'
import { drawChart } from '../chart'
import { bytes, errorText, fill, h, relative, toast, when } from '../dom'
import { fileBrowser } from '../files'
import { go, type Page } from '../main'
import { portsPanel } from '../ports'
import type { OpenTerminal } from '../terminal'
import { badge, killSandbox } from './sandboxes'

/**
 * The SDK insists on an API key; the relay replaces whatever it sends with
 * the session's, so the page never has the real one.
 */
const SESSION_KEY_PLACEHOLDER = 'dashboard-session'
const DETAIL_POLL_MS = 3000
const METRICS_POLL_MS = 5000
/** How much history the charts show. */
const WINDOW_S = 15 * 60

type Tab = 'overview' | 'ports' | 'terminal' | 'files' | 'logs'
const TABS: [Tab, string][] = [
  ['overview', 'Overview'],
  ['ports', 'Ports'],
  ['terminal', 'Terminal'],
  ['files', 'Files'],
  ['logs', 'Logs'],
]
const NEEDS_ENVD: Tab[] = ['ports', 'terminal', 'files']

export const sandboxPage: Page = (root, route) => {
  const id = route.path[1] as string
  const path = `/sandboxes/${encodeURIComponent(id)}`
  let detail: SandboxDetail | null = null
  let stopped = false
  let sdk: Promise<Sandbox> | null = null
  const timers: number[] = []
  const panelStops = new Map<Tab, () => void>()

  const stateBox = h('span', { id: 'sandbox-state' })
  const buttons = {
    pause: h('button', { id: 'btn-pause', onclick: () => void act('pause') }, 'Pause'),
    resume: h('button', { id: 'btn-resume', onclick: () => void act('resume') }, 'Resume'),
    snapshot: h('button', { id: 'btn-snapshot', onclick: () => void act('snapshot') }, 'Snapshot'),
    kill: h('button', { id: 'btn-kill', class: 'danger', onclick: () => void act('kill') }, 'Kill'),
  }
  const info = h('dl', { class: 'info', id: 'sandbox-info' })
  const charts = {
    cpu: h('div', { class: 'chart-box', id: 'chart-cpu' }),
    mem: h('div', { class: 'chart-box', id: 'chart-memory' }),
    disk: h('div', { class: 'chart-box', id: 'chart-disk' }),
  }
  const panels = new Map<Tab, HTMLElement>(TABS.map(([t]) => [t, h('section', { class: 'panel', id: `panel-${t}`, hidden: true })]))
  const overview = panels.get('overview') as HTMLElement
  fill(overview, info, h('div', { class: 'charts' }, charts.cpu, charts.mem, charts.disk))
  const tabBar = h(
    'div',
    { class: 'tabs', role: 'tablist' },
    ...TABS.map(([t, label]) => h('button', { role: 'tab', id: `tab-${t}`, 'data-tab': t, onclick: () => show(t) }, label)),
  )
  fill(
    root,
    h(
      'div',
      { class: 'title' },
      h('h1', { class: 'mono' }, id),
      stateBox,
      h('div', { class: 'actions' }, buttons.pause, buttons.resume, buttons.snapshot, buttons.kill),
    ),
    h('p', {}, h('a', { href: '#/' }, '← all sandboxes')),
    tabBar,
    ...panels.values(),
  )

  let current: Tab = (route.query.get('tab') as Tab | null) ?? 'overview'
  if (!panels.has(current)) current = 'overview'

  function show(tab: Tab): void {
    current = tab
    for (const [t, panel] of panels) panel.hidden = t !== tab
    for (const b of tabBar.querySelectorAll('button')) b.setAttribute('aria-selected', String(b.dataset.tab === tab))
    void mountPanel(tab)
  }

  async function sandbox(): Promise<Sandbox> {
    if (!sdk) {
      sdk = Sandbox.connect(id, {
        apiUrl: apiUrl(),
        apiKey: SESSION_KEY_PLACEHOLDER,
        domain: detail?.domain,
        requestTimeoutMs: 30_000,
      })
      sdk.catch(() => {
        sdk = null
      })
    }
    return sdk
  }

  /** Ends what talks to envd (after a pause, a kill, or leaving the page). */
  function resetEnvdPanels(remount = true): void {
    sdk = null
    for (const t of NEEDS_ENVD) {
      panelStops.get(t)?.()
      panelStops.delete(t)
    }
    for (const t of NEEDS_ENVD) fill(panels.get(t) as HTMLElement)
    if (remount && NEEDS_ENVD.includes(current)) void mountPanel(current)
  }

  async function mountPanel(tab: Tab): Promise<void> {
    const panel = panels.get(tab) as HTMLElement
    if (panelStops.has(tab) || tab === 'overview') return
    if (tab === 'logs') {
      panelStops.set(tab, () => {})
      logsPanel(panel)
      return
    }
    if (!detail || detail.state !== 'running') {
      fill(panel, h('p', { class: 'muted' }, detail ? `The sandbox is ${detail.state}: resume it to use this.` : 'Loading…'))
      return
    }
    panelStops.set(tab, () => {})
    fill(panel, h('p', { class: 'muted' }, 'Connecting to the sandbox…'))
    let sb: Sandbox
    try {
      sb = await sandbox()
    } catch (e) {
      panelStops.delete(tab)
      fill(panel, h('p', { class: 'error' }, `Could not connect: ${errorText(e)}`))
      return
    }
    if (stopped || !panelStops.has(tab)) return
    if (tab === 'ports') panelStops.set(tab, portsPanel(panel, sb, sb.trafficAccessToken))
    if (tab === 'files') panelStops.set(tab, fileBrowser(panel, sb))
    if (tab === 'terminal') {
      const box = h('div', { class: 'terminal', id: 'terminal' })
      const note = h('p', { class: 'muted', id: 'terminal-status' }, 'A login shell as the sandbox’s default user (it ends after an hour or on `exit`).')
      const again = h('button', { id: 'terminal-restart', hidden: true, onclick: () => restart() }, 'New shell')
      fill(panel, note, again, box)
      let term: OpenTerminal | null = null
      const restart = () => {
        panelStops.get('terminal')?.()
        panelStops.delete('terminal')
        void mountPanel('terminal')
      }
      panelStops.set(tab, () => term?.dispose())
      try {
        // xterm.js is half the page's code: loaded when a shell is opened.
        const { openTerminal } = await import('../terminal')
        term = await openTerminal(box, sb, (message) => {
          note.textContent = message
          again.hidden = false
        })
        if (stopped || !panelStops.has(tab)) term.dispose()
      } catch (e) {
        fill(panel, h('p', { class: 'error' }, `Could not start a shell: ${errorText(e)}`), again)
        again.hidden = false
      }
    }
  }

  function logsPanel(panel: HTMLElement): void {
    const list = h('pre', { class: 'logs', id: 'logs' })
    const load = async () => {
      try {
        const { data } = await call<{ logs: unknown[]; logEntries?: unknown[] }>(`${path}/logs`)
        const entries = data.logEntries?.length ? data.logEntries : data.logs
        list.textContent = entries.length ? entries.map(logLine).join('\n') : 'No log lines yet.'
      } catch (e) {
        list.textContent = `Could not read the logs: ${errorText(e)}`
      }
    }
    fill(panel, h('p', {}, h('button', { id: 'logs-refresh', onclick: () => void load() }, 'Refresh'), ' ', h('span', { class: 'muted' }, 'What the platform logged about this sandbox.')), list)
    void load()
  }

  function renderDetail(d: SandboxDetail): void {
    fill(stateBox, badge(d.state), d.pauseMode ? h('span', { class: 'muted' }, ` (${d.pauseMode})`) : null)
    buttons.pause.hidden = d.state !== 'running'
    buttons.resume.hidden = d.state !== 'paused'
    const row = (k: string, v: Node | string) => [h('dt', {}, k), h('dd', {}, v)]
    const priv = d.network?.allowPublicTraffic === false
    fill(
      info,
      ...row('Template', d.alias ?? d.templateID),
      ...row('Started', `${when(d.startedAt)} (${relative(d.startedAt)})`),
      ...row('Ends', d.state === 'running' ? `${when(d.endAt)} (${relative(d.endAt)})` : '–'),
      ...row('At timeout', `${d.lifecycle.onTimeout}${d.lifecycle.autoResume ? ', resumed by a request' : ''}`),
      ...row('Resources', `${d.cpuCount} CPU · ${bytes(d.memoryMB * 1048576)} memory · ${bytes(d.diskSizeMB * 1048576)} disk`),
      ...row('Network', `${d.allowInternetAccess ? 'internet' : 'no internet'} · ${priv ? 'private URLs (token)' : 'public URLs'}`),
      ...row('Metadata', h('span', {}, ...Object.entries(d.metadata ?? {}).map(([k, v]) => h('span', { class: 'chip' }, `${k}=${v}`)))),
      ...row('envd', d.envdVersion),
    )
  }

  async function refreshDetail(): Promise<void> {
    try {
      const { data } = await call<SandboxDetail>(path)
      if (stopped) return
      const was = detail?.state
      detail = data
      renderDetail(data)
      if (was !== undefined && was !== data.state) resetEnvdPanels()
      else if (was === undefined) show(current)
    } catch (e) {
      if (stopped) return
      if (e instanceof ApiError && e.status === 404) {
        stopped = true
        timers.forEach((t) => clearTimeout(t))
        resetEnvdPanels(false)
        fill(root, h('h1', {}, 'Sandbox not found'), h('p', {}, `${id} is gone (killed, or never of your team). `, h('a', { href: '#/' }, 'All sandboxes')))
        return
      }
      toast(`Could not refresh the sandbox: ${errorText(e)}`, 'error')
    }
  }

  async function refreshMetrics(): Promise<void> {
    if (!detail) return
    const now = Math.floor(Date.now() / 1000)
    const started = Math.floor(new Date(detail.startedAt).getTime() / 1000)
    const from = Math.max(started, now - WINDOW_S)
    try {
      const { data } = await call<MetricSample[]>(`${path}/metrics?start=${from}&end=${now}`)
      if (stopped) return
      const last = data[data.length - 1]
      const pts = (f: (m: MetricSample) => number): [number, number][] => data.map((m) => [m.timestampUnix, f(m)])
      const span = { from, to: Math.max(now, from + 60) }
      drawChart(charts.cpu, {
        id: 'svg-cpu',
        title: `CPU (${last?.cpuCount ?? detail.cpuCount} cores)`,
        max: 100,
        format: (v) => `${v.toFixed(v < 10 ? 1 : 0)} %`,
        series: [{ label: 'used', className: 's1', points: pts((m) => m.cpuUsedPct) }],
        ...span,
      })
      drawChart(charts.mem, {
        id: 'svg-memory',
        title: 'Memory',
        max: last?.memTotal ?? detail.memoryMB * 1048576,
        format: bytes,
        series: [
          { label: 'used', className: 's1', points: pts((m) => m.memUsed) },
          { label: 'cache', className: 's2', points: pts((m) => m.memCache) },
        ],
        ...span,
      })
      drawChart(charts.disk, {
        id: 'svg-disk',
        title: 'Disk',
        max: last?.diskTotal ?? detail.diskSizeMB * 1048576,
        format: bytes,
        series: [{ label: 'used', className: 's1', points: pts((m) => m.diskUsed) }],
        ...span,
      })
    } catch (e) {
      if (!stopped) charts.cpu.title = `metrics: ${errorText(e)}`
    }
  }

  async function act(what: 'pause' | 'resume' | 'snapshot' | 'kill'): Promise<void> {
    const all = Object.values(buttons)
    all.forEach((b) => (b.disabled = true))
    try {
      if (what === 'kill') {
        if (!confirm(`Kill ${id}? Its files go with it.`)) return
        resetEnvdPanels(false)
        await killSandbox(id)
        toast(`Killed ${id}`)
        go('#/')
        return
      }
      if (what === 'pause') {
        // Before the pause: closing a shell of a paused sandbox would be a
        // request to it, which wakes one that auto-resumes.
        resetEnvdPanels(false)
        // A repeat answered 409: the first one paused it.
        await call(`${path}/pause`, { method: 'POST', body: '{}' }, { repeat: true, doneOnRepeat: [409] })
        toast('Paused (processes and memory kept)')
      } else if (what === 'resume') {
        await call(`${path}/resume`, { method: 'POST', body: '{}' }, { repeat: true, doneOnRepeat: [409] })
        toast('Resumed')
      } else {
        const name = prompt('Snapshot name (optional, name or name:tag)', '')
        if (name === null) return
        const { data } = await call<{ snapshotID: string }>(`${path}/snapshots`, {
          method: 'POST',
          body: JSON.stringify(name.trim() ? { name: name.trim() } : {}),
        })
        toast(`Snapshot ${data.snapshotID} taken`)
      }
      await refreshDetail()
    } catch (e) {
      toast(`${what} failed: ${errorText(e)}`, 'error')
      if (!stopped && NEEDS_ENVD.includes(current)) void mountPanel(current)
    } finally {
      all.forEach((b) => (b.disabled = false))
    }
  }

  const loop = (f: () => Promise<void>, ms: number) => {
    const tick = async () => {
      await f()
      if (!stopped) timers.push(window.setTimeout(tick, ms))
    }
    void tick()
  }
  void refreshDetail().then(() => {
    if (stopped) return
    loop(refreshMetrics, METRICS_POLL_MS)
    timers.push(window.setTimeout(() => loop(refreshDetail, DETAIL_POLL_MS), DETAIL_POLL_MS))
  })

  return () => {
    stopped = true
    timers.forEach((t) => clearTimeout(t))
    for (const stop of panelStops.values()) stop()
    panelStops.clear()
  }
}

function logLine(entry: unknown): string {
  if (typeof entry === 'string') return entry
  if (entry && typeof entry === 'object') {
    const e = entry as Record<string, unknown>
    const at = typeof e.timestamp === 'string' ? e.timestamp : ''
    const level = typeof e.level === 'string' ? e.level.toUpperCase() : ''
    const msg = typeof e.message === 'string' ? e.message : typeof e.line === 'string' ? e.line : ''
    if (msg) {
      const fields = e.fields && typeof e.fields === 'object' ? ` ${JSON.stringify(e.fields)}` : ''
      return [at, level, msg].filter(Boolean).join(' ') + fields
    }
  }
  return JSON.stringify(entry)
}
