// The caller's team (`GET /teams`, which the relay answers without the key
// itself) and its API keys (`/api-keys`, E2B's shapes): listed by their
// masks, created (the new key is shown once, in the page only: never
// stored, gone when the box is closed or the page left), renamed and
// revoked.
import { call, type Team } from '../api'
import { errorText, fill, h, toast, when } from '../dom'
import type { Page } from '../main'

/** E2B's `TeamAPIKey` (`IdentifierMaskingDetails` as `mask`). */
interface TeamApiKey {
  id: string
  name: string
  mask: { prefix: string; valueLength: number; maskedValuePrefix: string; maskedValueSuffix: string }
  createdAt: string
}

/** E2B's `CreatedTeamAPIKey`: the only answer with the key in it. */
interface CreatedTeamApiKey extends TeamApiKey {
  key: string
}

/** Mirrors the API's bound on a key's name. */
const MAX_NAME = 100

function masked(k: TeamApiKey): string {
  const m = k.mask
  return `${m.prefix}${m.maskedValuePrefix}…${m.maskedValueSuffix}`
}

export const teamPage: Page = (root, _route, me) => {
  let gone = false
  const teams = h('div', { id: 'teams' }, h('p', { class: 'muted' }, 'Loading…'))
  const rows = h('tbody', { id: 'key-rows' })
  const status = h('span', { class: 'muted', id: 'keys-status' })
  const fresh = h('div', { id: 'new-key', class: 'notice', hidden: true })
  const name = h('input', { id: 'key-name', name: 'name', placeholder: 'Name, e.g. ci', maxlength: MAX_NAME, required: true, autocomplete: 'off' })
  const createButton = h('button', { type: 'submit', class: 'primary' }, 'Create key')
  const form = h('form', { id: 'key-create', class: 'filters' }, name, createButton)
  form.addEventListener('submit', (ev) => {
    ev.preventDefault()
    void create()
  })
  const isMine = (k: TeamApiKey) => `${k.mask.prefix}${k.mask.maskedValuePrefix}` === me.keyPrefix

  fill(
    root,
    h('h1', {}, 'Team & keys'),
    teams,
    h('div', { class: 'title' }, h('h2', {}, 'API keys'), status),
    h('p', {}, 'You are signed in with the key ', h('code', { id: 'key-prefix' }, `${me.keyPrefix}…`), '. The key itself stays on the server for this session; this page never sees it.'),
    form,
    fresh,
    h(
      'table',
      { class: 'list' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Key'), h('th', {}, 'Created'), h('th', {}, ''))),
      rows,
    ),
    h(
      'p',
      { class: 'muted', id: 'keys-cli' },
      'A revoked key is refused at once, and ends the sessions signed in with it. Keys of other teams, and teams and their limits, are managed on the server: ',
      h('code', {}, 'sandbar keys create NAME --team TEAM'),
      ', ',
      h('code', {}, 'sandbar teams create|ls|set'),
      '.',
    ),
  )

  const load = async () => {
    try {
      const { data } = await call<TeamApiKey[]>('/api-keys')
      if (gone) return
      fill(
        rows,
        ...(data.length
          ? data.map((k) =>
              h(
                'tr',
                { 'data-key': k.id },
                h('td', {}, k.name, ...(isMine(k) ? [' ', h('span', { class: 'chip', title: 'this session signed in with it' }, 'this session')] : [])),
                h('td', { class: 'mono' }, masked(k)),
                h('td', {}, when(k.createdAt)),
                h(
                  'td',
                  {},
                  h('button', { class: 'small rename', onclick: () => void rename(k) }, 'Rename'),
                  ' ',
                  h('button', { class: 'small danger revoke', onclick: () => void revoke(k) }, 'Revoke'),
                ),
              ),
            )
          : [h('tr', {}, h('td', { colspan: 4, class: 'muted' }, 'No keys.'))]),
      )
      status.textContent = `${data.length}`
    } catch (e) {
      status.textContent = `could not list: ${errorText(e)}`
    }
  }

  /** Shows the key just made, once; closing the box drops it from the page. */
  const showOnce = (made: CreatedTeamApiKey) => {
    const value = h('code', { id: 'new-key-value' }, made.key)
    const copy = h(
      'button',
      {
        id: 'new-key-copy',
        type: 'button',
        onclick: async () => {
          try {
            await navigator.clipboard.writeText(made.key)
            toast('Copied')
          } catch {
            // No clipboard access (permissions, an old browser): select it.
            const range = document.createRange()
            range.selectNodeContents(value)
            const sel = getSelection()
            sel?.removeAllRanges()
            sel?.addRange(range)
            toast('Select and copy it by hand: the clipboard is not available')
          }
        },
      },
      'Copy',
    )
    const done = h(
      'button',
      {
        id: 'new-key-done',
        type: 'button',
        onclick: () => {
          fill(fresh)
          fresh.hidden = true
        },
      },
      'Done',
    )
    fill(
      fresh,
      h('p', {}, h('strong', {}, `New key “${made.name}”.`), ' Copy it now: it is shown only this once, and neither sandbar nor this page keeps it.'),
      h('p', {}, value, ' ', copy, ' ', done),
    )
    fresh.hidden = false
  }

  const create = async () => {
    const wanted = name.value.trim()
    if (!wanted) return
    createButton.disabled = true
    try {
      const { data } = await call<CreatedTeamApiKey>('/api-keys', { method: 'POST', body: JSON.stringify({ name: wanted }) })
      if (gone) return
      name.value = ''
      showOnce(data)
      await load()
    } catch (e) {
      toast(`Could not create the key: ${errorText(e)}`, 'error')
    } finally {
      createButton.disabled = false
    }
  }

  const rename = async (k: TeamApiKey) => {
    const wanted = prompt(`New name for the key ${masked(k)}`, k.name)?.trim()
    if (!wanted || wanted === k.name) return
    try {
      await call(`/api-keys/${encodeURIComponent(k.id)}`, { method: 'PATCH', body: JSON.stringify({ name: wanted }) })
      toast(`Renamed to “${wanted}”`)
    } catch (e) {
      toast(`Could not rename the key: ${errorText(e)}`, 'error')
    }
    await load()
  }

  const revoke = async (k: TeamApiKey) => {
    const mine = isMine(k)
    const question =
      `Revoke the key “${k.name}” (${masked(k)})? Every program using it is refused from now on.` +
      (mine ? ' This session signed in with it: you will be signed out.' : '')
    if (!confirm(question)) return
    try {
      await call(`/api-keys/${encodeURIComponent(k.id)}`, { method: 'DELETE' })
      toast(`Revoked “${k.name}”`)
    } catch (e) {
      toast(`Could not revoke the key: ${errorText(e)}`, 'error')
    }
    // After revoking its own key the session ends here (401: signed out).
    await load()
  }

  void (async () => {
    try {
      const { data } = await call<Team[]>('/teams')
      if (gone) return
      fill(
        teams,
        h(
          'table',
          { class: 'list' },
          h('thead', {}, h('tr', {}, h('th', {}, 'Team'), h('th', {}, 'ID'), h('th', {}, ''))),
          h('tbody', {}, ...data.map((t) => h('tr', { 'data-team': t.teamID }, h('td', {}, t.name), h('td', { class: 'mono' }, t.teamID), h('td', {}, t.isDefault ? 'default' : '')))),
        ),
      )
    } catch (e) {
      fill(teams, h('p', { class: 'error' }, `Could not read the team: ${errorText(e)}`))
    }
  })()
  void load()
  return () => {
    gone = true
  }
}
