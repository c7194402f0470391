// The dashboard's shell: the session check, the navigation and a hash
// router (hash routes work under any path prefix the page is served at).
import './style.css'
import { session, signOut, whenSignedOut, type SessionInfo } from './api'
import { fill, h, errorText } from './dom'
import { signInPage } from './pages/signin'
import { sandboxesPage } from './pages/sandboxes'
import { snapshotsPage } from './pages/snapshots'
import { teamPage } from './pages/team'
import { templatesPage } from './pages/templates'

/** A mounted page; the returned function stops its polls and streams. */
export type Page = (root: HTMLElement, route: Route, me: SessionInfo) => (() => void) | void

export interface Route {
  path: string[]
  query: URLSearchParams
}

const app = document.getElementById('app') as HTMLElement
let me: SessionInfo | null = null
let unmount: (() => void) | void = undefined

function route(): Route {
  const raw = location.hash.replace(/^#/, '') || '/'
  const [path, query] = raw.split('?', 2) as [string, string | undefined]
  return { path: path.split('/').filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(query ?? '') }
}

export function go(hash: string): void {
  if (location.hash === hash) render()
  else location.hash = hash
}

function nav(current: string, info: SessionInfo): HTMLElement {
  const link = (hash: string, label: string, key: string) =>
    h('a', { href: hash, class: current === key ? 'active' : '' }, label)
  return h(
    'header',
    { class: 'top' },
    h('a', { href: '#/', class: 'brand' }, 'sandbar'),
    h(
      'nav',
      {},
      link('#/', 'Sandboxes', 'sandboxes'),
      link('#/snapshots', 'Snapshots', 'snapshots'),
      link('#/templates', 'Templates', 'templates'),
      link('#/team', 'Team & keys', 'team'),
    ),
    h(
      'div',
      { class: 'who' },
      h('span', { title: `team ${info.teamID}` }, info.name),
      h(
        'button',
        {
          class: 'link',
          id: 'sign-out',
          onclick: async () => {
            await signOut()
            me = null
            go('#/signin')
          },
        },
        'Sign out',
      ),
    ),
  )
}

async function render(): Promise<void> {
  if (unmount) unmount()
  unmount = undefined
  const r = route()
  if (me === null) {
    try {
      me = await session()
    } catch (e) {
      fill(app, h('p', { class: 'error' }, `The dashboard's server did not answer: ${errorText(e)}`))
      return
    }
  }
  if (me === null || r.path[0] === 'signin') {
    if (me !== null) {
      go('#/')
      return
    }
    const main = h('main', { class: 'narrow' })
    fill(app, main)
    unmount = signInPage(main, r, (info) => {
      me = info
      go('#/')
    })
    return
  }
  const pages: Record<string, [string, Page]> = {
    '': ['sandboxes', sandboxesPage],
    sandboxes: ['sandboxes', sandboxesPage],
    snapshots: ['snapshots', snapshotsPage],
    templates: ['templates', templatesPage],
    team: ['team', teamPage],
  }
  const [key, page] = pages[r.path[0] ?? ''] ?? ['', notFound]
  const main = h('main', {})
  fill(app, nav(key, me), main)
  unmount = page(main, r, me)
}

const notFound: Page = (root) => {
  fill(root, h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/' }, 'Back to the sandboxes')))
}

whenSignedOut(() => {
  if (me === null) return
  me = null
  go('#/signin')
})
window.addEventListener('hashchange', () => void render())
void render()
