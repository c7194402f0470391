// The ports a sandbox listens on, with their public URLs. envd has no call
// that lists sockets, so the page reads the kernel's own table
// (/proc/net/tcp{,6} of the sandbox's network namespace) through a command;
// any port can also be typed in. The proxy reaches servers bound to
// loopback too, so every listening socket has a working URL.
import type { Sandbox } from 'e2b'
import { errorText, fill, h } from './dom'

export const ENVD_PORT = 49983
const KNOWN: Record<number, string> = { [ENVD_PORT]: 'envd', 49999: 'code interpreter' }

/** Listening TCP ports in `/proc/net/tcp`-format text (state 0A = LISTEN). */
export function listeningPorts(procNetTcp: string): number[] {
  const ports = new Set<number>()
  for (const line of procNetTcp.split('\n')) {
    const f = line.trim().split(/\s+/)
    if (f.length < 4 || f[3] !== '0A') continue
    const port = parseInt((f[1] ?? '').split(':').pop() ?? '', 16)
    if (port > 0 && port < 65536) ports.add(port)
  }
  return [...ports].sort((a, b) => a - b)
}

/**
 * The URL that opens `port` in a browser: a private sandbox's traffic
 * token goes in the query once; the proxy trades it for a cookie of that
 * host and redirects to the URL without it.
 */
export function portUrl(sandbox: Sandbox, port: number, trafficToken?: string): string {
  const url = new URL(`https://${sandbox.getHost(port)}/`)
  if (trafficToken) url.searchParams.set('e2b_traffic_access_token', trafficToken)
  return url.href
}

export function portsPanel(box: HTMLElement, sandbox: Sandbox, trafficToken?: string): () => void {
  let gone = false
  const rows = h('tbody', { id: 'port-rows' })
  const status = h('span', { class: 'muted', id: 'ports-status' })
  const portIn = h('input', { id: 'port-input', type: 'number', min: 1, max: 65535, placeholder: 'port', required: true })
  const extra = new Set<number>()
  const form = h('form', { class: 'filters' }, h('button', { type: 'button', id: 'ports-refresh', onclick: () => void refresh() }, 'Refresh'), portIn, h('button', { type: 'submit' }, 'Add port'), status)
  form.addEventListener('submit', (e) => {
    e.preventDefault()
    const p = Number(portIn.value)
    if (Number.isInteger(p) && p > 0 && p < 65536) extra.add(p)
    portIn.value = ''
    void refresh()
  })
  fill(
    box,
    h('p', { class: 'muted' }, trafficToken ? 'This sandbox is private: the links carry its traffic token once, and the proxy keeps it in a cookie of that host.' : 'Every port is public at its URL.'),
    form,
    h('table', { class: 'list' }, h('thead', {}, h('tr', {}, h('th', {}, 'Port'), h('th', {}, 'What'), h('th', {}, 'Public URL'))), rows),
  )

  async function refresh(): Promise<void> {
    status.textContent = 'reading the sandbox’s sockets…'
    let listening: number[] = []
    try {
      const r = await sandbox.commands.run('cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; true', { timeoutMs: 15_000 })
      listening = listeningPorts(r.stdout)
      status.textContent = `${listening.length} listening · ${new Date().toLocaleTimeString()}`
    } catch (e) {
      status.textContent = `could not list the ports: ${errorText(e)}`
    }
    if (gone) return
    const all = [...new Set([...listening, ...extra])].sort((a, b) => a - b)
    fill(
      rows,
      ...all.map((port) => {
        const url = portUrl(sandbox, port, trafficToken)
        const shown = `https://${sandbox.getHost(port)}/`
        return h(
          'tr',
          { 'data-port': port },
          h('td', { class: 'mono' }, port),
          h('td', {}, KNOWN[port] ?? (listening.includes(port) ? 'listening' : 'typed in')),
          h('td', {}, h('a', { href: url, target: '_blank', rel: 'noopener noreferrer', class: 'mono open-port' }, shown)),
        )
      }),
    )
  }
  void refresh()
  return () => {
    gone = true
  }
}
