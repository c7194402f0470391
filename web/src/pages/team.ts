// The caller's team (`GET /teams`, which the relay answers without the key
// itself) and how keys are managed: the API has no key routes, so the page
// says where it is done instead of pretending.
import { call, type Team } from '../api'
import { errorText, fill, h } from '../dom'
import type { Page } from '../main'

export const teamPage: Page = (root, _route, me) => {
  const teams = h('div', { id: 'teams' }, h('p', { class: 'muted' }, 'Loading…'))
  fill(
    root,
    h('h1', {}, 'Team & keys'),
    teams,
    h('h2', {}, 'API keys'),
    h('p', {}, 'You are signed in with the key ', h('code', { id: 'key-prefix' }, `${me.keyPrefix}…`), '. The key itself stays on the server for this session; this page never sees it.'),
    h(
      'p',
      { class: 'notice', id: 'keys-cli' },
      'sandbar’s API has no routes for managing keys. Use the CLI on the server: ',
      h('code', {}, `sandbar keys create NAME --team ${me.name}`),
      ', ',
      h('code', {}, 'sandbar keys list'),
      ', ',
      h('code', {}, 'sandbar keys revoke PREFIX'),
      '; teams and their limits with ',
      h('code', {}, 'sandbar teams create|ls|set'),
      '. A revoked key ends the sessions signed in with it.',
    ),
  )
  void (async () => {
    try {
      const { data } = await call<Team[]>('/teams')
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
}
