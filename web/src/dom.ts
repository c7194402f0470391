// A few lines of DOM building instead of a framework: the dashboard is a
// handful of pages, and every kilobyte here is embedded in the binary.

type Child = Node | string | number | null | undefined | false
type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>

/** `h('a', { href: '#/', class: 'x', onclick: fn }, 'text', child)` */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag)
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue
    if (typeof value === 'function') {
      el.addEventListener(name.replace(/^on/, ''), value)
    } else if (value === true) {
      el.setAttribute(name, '')
    } else {
      el.setAttribute(name, String(value))
    }
  }
  append(el, ...children)
  return el
}

export function append(el: Node, ...children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue
    el.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c)
  }
}

export function clear(el: Element): void {
  while (el.firstChild) el.removeChild(el.firstChild)
}

/** Replaces `el`'s children. */
export function fill(el: Element, ...children: Child[]): void {
  clear(el)
  append(el, ...children)
}

export function bytes(n: number): string {
  if (!Number.isFinite(n)) return '–'
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (Math.abs(n) >= 1024 && i < units.length - 1) {
    n /= 1024
    i++
  }
  return `${n.toFixed(i === 0 || n >= 100 ? 0 : 1)} ${units[i]}`
}

export function when(iso: string | undefined): string {
  if (!iso) return '–'
  const d = new Date(iso)
  if (Number.isNaN(d.getTime())) return iso
  return d.toLocaleString()
}

/** "in 4 min", "2 h ago". */
export function relative(iso: string | undefined, now = Date.now()): string {
  if (!iso) return ''
  const t = new Date(iso).getTime()
  if (Number.isNaN(t)) return ''
  const s = Math.round((t - now) / 1000)
  const abs = Math.abs(s)
  const span =
    abs < 60 ? `${abs} s` : abs < 3600 ? `${Math.round(abs / 60)} min` : abs < 86400 ? `${Math.round(abs / 3600)} h` : `${Math.round(abs / 86400)} d`
  return s >= 0 ? `in ${span}` : `${span} ago`
}

/** A short-lived message at the top of the page. */
export function toast(message: string, kind: 'error' | 'info' = 'info'): void {
  let box = document.getElementById('toasts')
  if (!box) {
    box = h('div', { id: 'toasts', role: 'status', 'aria-live': 'polite' })
    document.body.appendChild(box)
  }
  const t = h('div', { class: `toast ${kind}` }, message)
  box.appendChild(t)
  setTimeout(() => t.remove(), kind === 'error' ? 8000 : 4000)
}

export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e)
}
