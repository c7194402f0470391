// Helpers of the platform suite: sandboxes made through the control plane,
// tagged with this run's id so they can be found (and killed) afterwards.
import { readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { Sandbox } from 'e2b'

export const RUN_ID = `r${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`
export const TEMPLATE = process.env.E2E_TEMPLATE ?? 'base'
const created = new Set()

/** A sandbox for one test, killed by `killAll()`. */
export async function create(opts = {}) {
  const sandbox = await Sandbox.create(TEMPLATE, {
    timeoutMs: 120_000,
    ...opts,
    metadata: { run: RUN_ID, ...(opts.metadata ?? {}) },
  })
  created.add(sandbox.sandboxId)
  return sandbox
}

export async function killAll() {
  await Promise.all([...created].map((id) => Sandbox.kill(id).catch(() => false)))
  created.clear()
}

/**
 * GETs `url` until `done(response)` holds: a server started in the
 * background needs a moment before it listens.
 */
export async function fetchUntil(url, done, { headers = {}, timeoutMs = 15_000 } = {}) {
  const deadline = Date.now() + timeoutMs
  let last
  for (;;) {
    const res = await fetch(url, { headers })
    const body = await res.text()
    last = { status: res.status, body, headers: res.headers }
    if (done(last)) return last
    if (Date.now() > deadline) return last
    await sleep(100)
  }
}

/** A server in the sandbox's home directory, in the background. */
export async function httpServer(sandbox, port, bind) {
  const cmd = `python3 -m http.server ${port}` + (bind ? ` --bind ${bind}` : '')
  return sandbox.commands.run(cmd, { background: true, cwd: '/home/user' })
}

/**
 * Exactly the variables `sandbar env` printed (the runner saves them in the
 * file named by E2E_SANDBAR_ENV), plus PATH and HOME.
 */
export function sandbarEnvOnly() {
  const env = { PATH: process.env.PATH, HOME: process.env.HOME }
  const file = process.env.E2E_SANDBAR_ENV
  if (!file) throw new Error('E2E_SANDBAR_ENV is not set: run this suite through run-platform.sh')
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = line.match(/^export ([A-Z0-9_]+)='(.*)'$/)
    if (m) env[m[1]] = m[2].replaceAll(`'\\''`, `'`)
  }
  for (const k of ['E2B_API_URL', 'E2B_DOMAIN', 'E2B_API_KEY']) {
    if (!env[k]) throw new Error(`sandbar env did not print ${k}`)
  }
  return env
}

export function escapeRegExp(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}
