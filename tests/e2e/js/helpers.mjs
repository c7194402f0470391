// Shared helpers for the JS suite: one switch decides what a "sandbox" is.
//
//   E2E_TARGET=envd     a standalone envd (see run-envd.sh); the SDK is put in
//                       debug mode, so it never calls the control plane.
//   E2E_TARGET=sandbar  a real sandbar server: Sandbox.create() through the
//                       API, with E2B_API_KEY / E2B_DOMAIN / E2B_API_URL and the
//                       CA variables printed by `sandbar env`.
import { readFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { Sandbox } from 'e2b'

export const TARGET = process.env.E2E_TARGET ?? 'envd'
if (!['envd', 'sandbar'].includes(TARGET)) {
  throw new Error(`E2E_TARGET must be "envd" or "sandbar", got "${TARGET}"`)
}

// The sandbox-wide env vars: written into envd's init file by run-envd.sh, or
// passed to Sandbox.create() in sandbar mode. One file, so both agree.
export const SANDBOX_ENVS = JSON.parse(
  readFileSync(new URL('../fixtures/sandbox-envs.json', import.meta.url), 'utf8'),
)

// The SDK's own fallback version in debug mode: it turns on every feature.
const ENVD_VERSION = process.env.E2E_ENVD_VERSION ?? '99.99.99'
const ENVD_URL = process.env.E2E_ENVD_URL ?? 'http://localhost:49983'
export const DEFAULT_USER = 'user'
export const DEFAULT_HOME = '/home/user'

/** The access token envd was started with (envd mode), from the runner. */
export function envdAccessToken() {
  const token = process.env.E2E_ENVD_ACCESS_TOKEN
  if (!token) {
    throw new Error('E2E_ENVD_ACCESS_TOKEN is not set: start envd with run-envd.sh or export the token its init file holds')
  }
  return token
}

/**
 * A sandbox to test against. In envd mode it is the one standalone envd; the
 * token may be overridden to test authentication failures.
 */
export async function newSandbox(opts = {}) {
  if (TARGET === 'envd') {
    return envdSandbox(opts.envdAccessToken ?? envdAccessToken())
  }
  return Sandbox.create(process.env.E2E_TEMPLATE ?? 'base', {
    envs: SANDBOX_ENVS,
    timeoutMs: 5 * 60_000,
    ...opts.createOpts,
  })
}

/** A client for the same sandbox that presents a different access token. */
export function withAccessToken(sandbox, token) {
  if (TARGET === 'envd') return envdSandbox(token)
  return sandboxWith({
    sandboxId: sandbox.sandboxId,
    sandboxDomain: sandbox.sandboxDomain,
    envdVersion: sandbox.envdApi.version,
    envdAccessToken: token,
  })
}

function envdSandbox(token) {
  const opts = {
    sandboxId: 'debug_sandbox_id',
    envdVersion: ENVD_VERSION,
    envdAccessToken: token,
    debug: true,
  }
  // Debug mode means http://localhost:49983; another address goes through
  // the SDK's sandboxUrl override.
  if (ENVD_URL !== 'http://localhost:49983') opts.sandboxUrl = ENVD_URL
  return sandboxWith(opts)
}

// Sandbox.create()/connect() in debug mode drop the access token, so the
// instance is built the way connect() builds it, with the token kept.
function sandboxWith(opts) {
  return new Sandbox(opts)
}

/** Ends the sandbox from newSandbox(): a no-op for the shared standalone envd. */
export async function killSandbox(sandbox) {
  if (TARGET === 'sandbar' && sandbox) await sandbox.kill()
}

/** The base URL envd answers on for plain HTTP (health, envs, files). */
export function envdBaseUrl(sandbox) {
  return sandbox.envdDirectUrl
}

/** A fresh directory name in the user's home, unique per test run. */
export function uniqueName(prefix = 'e2e') {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`
}

/** A scratch directory owned by the default user; removed by the returned cleanup. */
export async function scratchDir(sandbox, prefix) {
  const dir = `${DEFAULT_HOME}/${uniqueName(prefix)}`
  await sandbox.files.makeDir(dir)
  return {
    dir,
    cleanup: () => sandbox.files.remove(dir).catch(() => {}),
  }
}

/** Polls `check` until it returns a truthy value or `timeoutMs` passes. */
export async function waitFor(check, { timeoutMs = 5000, intervalMs = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs
  let last
  while (Date.now() < deadline) {
    last = await check()
    if (last) return last
    await sleep(intervalMs)
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
}

/** Runs `fn` and returns the error it throws; fails if it does not throw. */
export async function rejection(fn) {
  try {
    await fn()
  } catch (err) {
    return err
  }
  throw new Error('expected the call to throw, it returned normally')
}

/** An error as one line for assertion messages, with its cause (e.g. EPIPE). */
export function explain(err) {
  if (!(err instanceof Error)) return String(err)
  const cause = err.cause instanceof Error ? ` (cause: ${err.cause.code ?? err.cause.name}: ${err.cause.message})` : ''
  return `${err.name}: ${err.message}${cause}`
}
