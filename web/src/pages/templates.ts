// Templates: what the API says about them. sandbar builds templates on the
// server (`sandbar template build`), and its API answers the template
// routes with a message that says so; the page shows that answer rather
// than a list it does not have.
import { ApiError, call } from '../api'
import { errorText, fill, h } from '../dom'
import type { Page } from '../main'

interface Template {
  templateID: string
  aliases?: string[]
  buildStatus?: string
  createdAt?: string
}

export const templatesPage: Page = (root) => {
  const body = h('div', { id: 'templates' }, h('p', { class: 'muted' }, 'Loading…'))
  fill(root, h('h1', {}, 'Templates'), body)
  void (async () => {
    try {
      const { data } = await call<Template[]>('/templates')
      fill(
        body,
        h(
          'table',
          { class: 'list' },
          h('thead', {}, h('tr', {}, h('th', {}, 'Template'), h('th', {}, 'Aliases'), h('th', {}, 'Build'))),
          h('tbody', {}, ...data.map((t) => h('tr', {}, h('td', { class: 'mono' }, t.templateID), h('td', {}, (t.aliases ?? []).join(', ')), h('td', {}, t.buildStatus ?? '')))),
        ),
      )
    } catch (e) {
      const answer = e instanceof ApiError ? `The API answered ${e.status}: ${e.message}` : errorText(e)
      fill(
        body,
        h('p', { class: 'notice', id: 'templates-answer' }, answer),
        h('p', {}, 'On the server: ', h('code', {}, 'sandbar template ls'), ' lists the built templates and ', h('code', {}, 'sandbar template build NAME'), ' builds one (its log is printed there). Sandboxes start from any built template by name, e.g. ', h('code', {}, "Sandbox.create('base')"), '.'),
      )
    }
  })()
}
