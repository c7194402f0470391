// The team's snapshots (`GET /snapshots`), each startable by its id, and
// deletable (`DELETE /templates/{id}`, as E2B names it).
import { listAll, type Snapshot } from '../api'
import { errorText, fill, h, when } from '../dom'
import { removeTemplate } from '../remove'
import type { Page } from '../main'

export const snapshotsPage: Page = (root) => {
  const rows = h('tbody', { id: 'snapshot-rows' })
  const status = h('span', { class: 'muted' })
  fill(
    root,
    h('div', { class: 'title' }, h('h1', {}, 'Snapshots'), status),
    h('p', { class: 'muted' }, 'Start a sandbox from one with its id as the template: ', h('code', {}, "Sandbox.create('<snapshot id>')"), '.'),
    h(
      'table',
      { class: 'list' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Snapshot'), h('th', {}, 'Names'), h('th', {}, 'From sandbox'), h('th', {}, 'Created'), h('th', {}, ''))),
      rows,
    ),
  )
  let gone = false
  const load = async () => {
    try {
      const list = await listAll<Snapshot>('/snapshots', new URLSearchParams())
      if (gone) return
      fill(
        rows,
        ...(list.length
          ? list.map((s) => {
              const from = str(s.sandboxID) || str(s.sourceSandboxID)
              const created = str(s.createdAt)
              return h(
                'tr',
                { 'data-snapshot': s.snapshotID },
                h('td', { class: 'mono' }, s.snapshotID),
                h('td', {}, ...(s.names ?? []).map((n) => h('span', { class: 'chip' }, n))),
                h('td', { class: 'mono' }, from ? h('a', { href: `#/sandboxes/${encodeURIComponent(from)}` }, from) : '–'),
                h('td', {}, created ? when(created) : '–'),
                h('td', {}, h('button', { class: 'small danger', onclick: () => void remove(s.snapshotID) }, 'Delete')),
              )
            })
          : [h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No snapshots. Take one from a sandbox’s page.'))]),
      )
      status.textContent = `${list.length}`
    } catch (e) {
      status.textContent = `could not list: ${errorText(e)}`
    }
  }
  const remove = async (id: string) => {
    await removeTemplate(id, `snapshot ${id}`)
    await load()
  }
  void load()
  return () => {
    gone = true
  }
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : ''
}
