// The team's sandboxes, filtered by state, template and metadata, polled
// every 2 s. `#/sandboxes/{id}` opens one (its page loads the SDK and the
// terminal, kept out of this page's code).
import { call, listAll, type ListedSandbox } from '../api'
import { bytes, errorText, fill, h, relative, toast, when } from '../dom'
import { go, type Page } from '../main'

const POLL_MS = 2000

/** `a=1, b=2` -> the API's `metadata` parameter (`a=1&b=2`). */
export function metadataQuery(text: string): string {
  const q = new URLSearchParams()
  for (const part of text.split(/[,&]/)) {
    const [k, ...v] = part.split('=')
    const key = (k ?? '').trim()
    if (key) q.append(key, v.join('=').trim())
  }
  return q.toString()
}

export const sandboxesPage: Page = (root, route, me) => {
  if (route.path[1]) {
    let stop: (() => void) | void = undefined
    let gone = false
    fill(root, h('p', { class: 'muted' }, 'Loading…'))
    import('./sandbox')
      .then((m) => {
        if (!gone) stop = m.sandboxPage(root, route, me)
      })
      .catch((e) => fill(root, h('p', { class: 'error' }, `Could not load the page: ${errorText(e)}`)))
    return () => {
      gone = true
      if (stop) stop()
    }
  }

  const state = route.query.get('state') ?? ''
  const template = route.query.get('template') ?? ''
  const metadata = route.query.get('metadata') ?? ''

  const stateSel = h(
    'select',
    { id: 'filter-state', name: 'state' },
    h('option', { value: '' }, 'running and paused'),
    h('option', { value: 'running' }, 'running'),
    h('option', { value: 'paused' }, 'paused'),
  )
  stateSel.value = state
  const templateIn = h('input', { id: 'filter-template', name: 'template', placeholder: 'any template', value: template })
  const metadataIn = h('input', { id: 'filter-metadata', name: 'metadata', placeholder: 'key=value, …', value: metadata })
  const apply = () => {
    const q = new URLSearchParams()
    if (stateSel.value) q.set('state', stateSel.value)
    if (templateIn.value.trim()) q.set('template', templateIn.value.trim())
    if (metadataIn.value.trim()) q.set('metadata', metadataIn.value.trim())
    const qs = q.toString()
    go(`#/sandboxes${qs ? `?${qs}` : ''}`)
  }
  const filters = h(
    'form',
    { class: 'filters', id: 'filters' },
    h('label', {}, 'State ', stateSel),
    h('label', {}, 'Template ', templateIn),
    h('label', {}, 'Metadata ', metadataIn),
    h('button', { type: 'submit' }, 'Filter'),
  )
  filters.addEventListener('submit', (e) => {
    e.preventDefault()
    apply()
  })
  stateSel.addEventListener('change', apply)

  const status = h('span', { class: 'muted', id: 'list-status' })
  const body = h('tbody', { id: 'sandbox-rows' })
  const table = h(
    'table',
    { class: 'list' },
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        h('th', {}, 'Sandbox'),
        h('th', {}, 'Template'),
        h('th', {}, 'State'),
        h('th', {}, 'Started'),
        h('th', {}, 'Ends'),
        h('th', {}, 'Resources'),
        h('th', {}, 'Metadata'),
      ),
    ),
    body,
  )
  fill(root, h('div', { class: 'title' }, h('h1', {}, 'Sandboxes'), status), filters, table)

  const params = new URLSearchParams()
  if (state) params.set('state', state)
  if (template) params.set('template', template)
  const meta = metadataQuery(metadata)
  if (meta) params.set('metadata', meta)

  let timer: number | undefined
  let stopped = false
  let failedBefore = false
  const refresh = async () => {
    try {
      const list = await listAll<ListedSandbox>('/v2/sandboxes', params)
      if (stopped) return
      list.sort((a, b) => b.startedAt.localeCompare(a.startedAt))
      fill(body, ...(list.length ? list.map(row) : [h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No sandboxes.'))]))
      status.textContent = `${list.length} · updated ${new Date().toLocaleTimeString()}`
      failedBefore = false
    } catch (e) {
      if (stopped) return
      status.textContent = `update failed: ${errorText(e)}`
      if (!failedBefore) toast(errorText(e), 'error')
      failedBefore = true
    }
    if (!stopped) timer = window.setTimeout(refresh, POLL_MS)
  }
  void refresh()
  return () => {
    stopped = true
    window.clearTimeout(timer)
  }
}

function row(s: ListedSandbox): HTMLTableRowElement {
  return h(
    'tr',
    { 'data-sandbox': s.sandboxID },
    h('td', {}, h('a', { href: `#/sandboxes/${encodeURIComponent(s.sandboxID)}`, class: 'mono' }, s.sandboxID)),
    h('td', {}, s.alias ?? s.templateID),
    h('td', {}, badge(s.state)),
    h('td', { title: when(s.startedAt) }, relative(s.startedAt)),
    h('td', { title: when(s.endAt) }, s.state === 'running' ? relative(s.endAt) : '–'),
    h('td', {}, `${s.cpuCount} CPU · ${bytes(s.memoryMB * 1048576)} · ${bytes(s.diskSizeMB * 1048576)} disk`),
    h('td', {}, ...Object.entries(s.metadata ?? {}).map(([k, v]) => h('span', { class: 'chip' }, `${k}=${v}`))),
  )
}

export function badge(state: string): HTMLElement {
  return h('span', { class: `badge ${state}`, 'data-state': state }, state)
}

/** Used by the sandbox page after a kill. */
export async function killSandbox(id: string): Promise<void> {
  // A repeat answered 404: the first one killed it.
  await call(`/sandboxes/${encodeURIComponent(id)}`, { method: 'DELETE' }, { doneOnRepeat: [404] })
}
