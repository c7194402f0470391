// Talking to the dashboard's own server: `session` (sign in and out) and
// `api/…`, which it relays to the E2B API with the session's key. The key
// never comes back to the page: requests carry only the HttpOnly cookie.

export interface SessionInfo {
  teamID: string
  name: string
  keyPrefix: string
}

export interface ListedSandbox {
  sandboxID: string
  templateID: string
  alias?: string
  startedAt: string
  endAt: string
  cpuCount: number
  memoryMB: number
  diskSizeMB: number
  state: string
  metadata: Record<string, string>
}

export interface SandboxDetail extends ListedSandbox {
  envdVersion: string
  domain?: string
  allowInternetAccess: boolean
  network?: { allowPublicTraffic?: boolean } & Record<string, unknown>
  lifecycle: { autoResume: boolean; onTimeout: string }
  pauseMode?: string
}

export interface MetricSample {
  timestamp: string
  timestampUnix: number
  cpuCount: number
  cpuUsedPct: number
  memUsed: number
  memTotal: number
  memCache: number
  diskUsed: number
  diskTotal: number
}

export interface Snapshot {
  snapshotID: string
  names?: string[]
  [field: string]: unknown
}

export interface Team {
  teamID: string
  name: string
  isDefault: boolean
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

/** The URL of `path` next to the page (the dashboard may live under a prefix). */
export function here(path: string): string {
  return new URL(path, document.baseURI.replace(/#.*$/, '')).href
}

/** Where the SDK finds the API: our relay. */
export function apiUrl(): string {
  return here('api').replace(/\/$/, '')
}

let onSignedOut: () => void = () => {}
export function whenSignedOut(f: () => void): void {
  onSignedOut = f
}

async function fail(res: Response): Promise<never> {
  let message = `${res.status} ${res.statusText}`
  try {
    const body = (await res.json()) as { message?: string }
    if (body.message) message = body.message
  } catch {
    // not JSON: keep the status line
  }
  if (res.status === 401) onSignedOut()
  throw new ApiError(res.status, message)
}

/**
 * A request that got no answer because the browser saw the network change
 * (Chromium aborts requests in flight with ERR_NETWORK_CHANGED, a
 * TypeError to fetch, when an interface comes or goes; on sandbar's own
 * host every sandbox adds and removes one) may be sent once more when
 * repeating it does no harm: by default for GET, HEAD, PUT and DELETE.
 */
export interface Repeat {
  /** Send it again after such a failure (default: by method). */
  repeat?: boolean
  /** Statuses that, answering the repeat, say the first one was done (a
   *  DELETE's 404, a pause's 409). */
  doneOnRepeat?: number[]
}

const REPEATABLE = new Set(['GET', 'HEAD', 'PUT', 'DELETE'])

/** Whether `e` is a failure of the network under a request, not an answer. */
export function isNetworkFailure(e: unknown): boolean {
  return e instanceof TypeError || (e instanceof Error && /failed to fetch|network ?changed|fetch failed/i.test(e.message))
}

export async function call<T>(
  path: string,
  init: RequestInit = {},
  { repeat, doneOnRepeat = [] }: Repeat = {},
): Promise<{ data: T; headers: Headers }> {
  const headers = new Headers(init.headers)
  if (init.body !== undefined && !headers.has('content-type')) headers.set('content-type', 'application/json')
  const send = () => fetch(here(`api${path}`), { ...init, headers, credentials: 'same-origin' })
  let res: Response
  try {
    res = await send()
  } catch (e) {
    if (!(repeat ?? REPEATABLE.has((init.method ?? 'GET').toUpperCase())) || !isNetworkFailure(e)) throw e
    res = await send()
    if (doneOnRepeat.includes(res.status)) return { data: undefined as T, headers: res.headers }
  }
  if (!res.ok) await fail(res)
  const text = await res.text()
  return { data: (text ? JSON.parse(text) : undefined) as T, headers: res.headers }
}

export async function session(): Promise<SessionInfo | null> {
  const res = await fetch(here('session'), { credentials: 'same-origin' })
  if (res.status === 401) return null
  if (!res.ok) await fail(res)
  return (await res.json()) as SessionInfo
}

export async function signIn(apiKey: string): Promise<SessionInfo> {
  const res = await fetch(here('session'), {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ apiKey }),
  })
  if (!res.ok) {
    let message = res.status === 401 ? 'That API key was refused.' : `${res.status} ${res.statusText}`
    try {
      const body = (await res.json()) as { message?: string }
      if (body.message) message = body.message
    } catch {
      // keep the default
    }
    throw new ApiError(res.status, message)
  }
  return (await res.json()) as SessionInfo
}

export async function signOut(): Promise<void> {
  await fetch(here('session/logout'), { method: 'POST', credentials: 'same-origin' })
}

/** Every page of a listing that pages by `X-Next-Token` (at most `maxPages`). */
export async function listAll<T>(path: string, params: URLSearchParams, maxPages = 10): Promise<T[]> {
  const out: T[] = []
  let token: string | null = null
  for (let page = 0; page < maxPages; page++) {
    const q = new URLSearchParams(params)
    if (token) q.set('nextToken', token)
    const qs = q.toString()
    const { data, headers } = await call<T[]>(`${path}${qs ? `?${qs}` : ''}`)
    out.push(...data)
    token = headers.get('x-next-token')
    if (!token) break
  }
  return out
}
