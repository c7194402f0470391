// Sign in with an API key. The key goes to the dashboard's server once; the
// server keeps it and answers with an HttpOnly session cookie, so nothing
// here stores it (no localStorage, no sessionStorage, no JS-visible cookie).
import { signIn, type SessionInfo } from '../api'
import { fill, h, errorText } from '../dom'
import type { Route } from '../main'

export function signInPage(root: HTMLElement, _route: Route, done: (info: SessionInfo) => void): void {
  const input = h('input', {
    id: 'api-key',
    name: 'api-key',
    type: 'password',
    autocomplete: 'off',
    spellcheck: 'false',
    placeholder: 'e2b_…',
    required: true,
  })
  const error = h('p', { class: 'error', id: 'sign-in-error', role: 'alert' })
  const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in')
  const form = h(
    'form',
    { class: 'card', id: 'sign-in' },
    h('h1', {}, 'sandbar'),
    h('p', { class: 'muted' }, 'Sign in with an API key of your team (`sandbar env` prints the operator’s, `sandbar keys create` makes more).'),
    h('label', { for: 'api-key' }, 'API key'),
    input,
    button,
    error,
  )
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault()
    button.disabled = true
    error.textContent = ''
    try {
      const info = await signIn(input.value.trim())
      input.value = ''
      done(info)
    } catch (e) {
      error.textContent = errorText(e)
      input.select()
    } finally {
      button.disabled = false
    }
  })
  fill(root, form)
  input.focus()
}
