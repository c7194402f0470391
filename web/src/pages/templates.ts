// The team's templates (`GET /templates`), built with the SDKs' builders,
// the E2B CLI or `sandbar template build --dockerfile`: each with its builds
// (`GET /templates/{id}`), a build's log and why it failed (`GET
// /templates/{id}/builds/{buildID}/status`), its tags, and deletion. The
// built-in templates (`base`, `code-interpreter-v1`) are the server's and
// are listed by `sandbar template ls` there.
import { call } from '../api'
import { errorText, fill, h, when } from '../dom'
import { removeTemplate } from '../remove'
import type { Page } from '../main'

interface Template {
  templateID: string
  names?: string[]
  buildID?: string
  buildStatus?: string
  buildCount?: number
  spawnCount?: number
  updatedAt?: string
}

interface Build {
  buildID: string
  status: string
  createdAt?: string
  finishedAt?: string
}

interface LogEntry {
  timestamp: string
  level: string
  message: string
  step?: string
}

interface BuildStatus {
  status: string
  logEntries: LogEntry[]
  reason?: { message: string; step?: string }
}

interface Tag {
  tag: string
  buildID: string
}

const statusChip = (s: string | undefined) => h('span', { class: `chip state-${s ?? 'unknown'}` }, s ?? '–')

/** Every log entry of a build: the status route pages them by offset. */
async function buildLog(templateID: string, buildID: string): Promise<BuildStatus> {
  const entries: LogEntry[] = []
  for (;;) {
    const { data } = await call<BuildStatus>(
      `/templates/${encodeURIComponent(templateID)}/builds/${encodeURIComponent(buildID)}/status?logsOffset=${entries.length}`,
    )
    entries.push(...data.logEntries)
    if (data.logEntries.length === 0) return { ...data, logEntries: entries }
  }
}

export const templatesPage: Page = (root) => {
  const rows = h('tbody', { id: 'template-rows' })
  const detail = h('div', { id: 'template-detail' })
  const status = h('span', { class: 'muted' })
  fill(
    root,
    h('div', { class: 'title' }, h('h1', {}, 'Templates'), status),
    h(
      'p',
      { class: 'muted' },
      'Your team’s templates. Build one with the SDK (',
      h('code', {}, "Template.build(Template().fromTemplate('base').runCmd(…), 'my-template')"),
      '), the E2B CLI, or ',
      h('code', {}, 'sandbar template build NAME --dockerfile Dockerfile'),
      '; start sandboxes with ',
      h('code', {}, "Sandbox.create('my-template')"),
      '.',
    ),
    h(
      'table',
      { class: 'list' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Template ID'), h('th', {}, 'Latest build'), h('th', {}, 'Builds'), h('th', {}, 'Sandboxes started'), h('th', {}, 'Updated'), h('th', {}, ''))),
      rows,
    ),
    detail,
  )
  let gone = false

  const builds = h('div', { id: 'template-builds-area' })
  const buildArea = h('div', { id: 'build-area' })
  fill(detail, builds, buildArea)

  const showBuild = async (t: Template, buildID: string) => {
    const log = h('pre', { class: 'logs', id: 'build-log' }, 'Loading…')
    const reason = h('p', { id: 'build-reason' })
    fill(buildArea, h('h3', {}, `Build ${buildID}`), reason, log)
    try {
      const st = await buildLog(t.templateID, buildID)
      if (gone) return
      if (st.reason) {
        reason.className = 'notice'
        reason.textContent = `Failed at ${st.reason.step ?? '?'}: ${st.reason.message}`
      } else {
        reason.textContent = `Status: ${st.status}`
      }
      log.textContent = st.logEntries.map((e) => `${e.timestamp.slice(11, 23)} ${e.level.padEnd(5)} ${e.message}`).join('\n') || '(no log lines)'
    } catch (e) {
      log.textContent = `could not read the log: ${errorText(e)}`
    }
  }

  const showTemplate = async (t: Template) => {
    fill(buildArea)
    fill(builds, h('p', { class: 'muted' }, 'Loading…'))
    try {
      const [{ data: one }, { data: tags }] = await Promise.all([
        call<{ builds: Build[] }>(`/templates/${encodeURIComponent(t.templateID)}`),
        call<Tag[]>(`/templates/${encodeURIComponent(t.templateID)}/tags`),
      ])
      if (gone) return
      const tagsOf = (b: string) => tags.filter((x) => x.buildID === b).map((x) => h('span', { class: 'chip' }, x.tag))
      fill(
        builds,
        h('h2', {}, (t.names ?? [t.templateID]).join(', ')),
        h(
          'table',
          { class: 'list', id: 'template-builds' },
          h('thead', {}, h('tr', {}, h('th', {}, 'Build'), h('th', {}, 'Status'), h('th', {}, 'Tags'), h('th', {}, 'Started'), h('th', {}, 'Finished'))),
          h(
            'tbody',
            {},
            ...one.builds.map((b) =>
              h(
                'tr',
                { 'data-build': b.buildID },
                h('td', { class: 'mono' }, h('button', { class: 'link', onclick: () => void showBuild(t, b.buildID) }, b.buildID)),
                h('td', {}, statusChip(b.status)),
                h('td', {}, ...tagsOf(b.buildID)),
                h('td', {}, b.createdAt ? when(b.createdAt) : '–'),
                h('td', {}, b.finishedAt ? when(b.finishedAt) : '–'),
              ),
            ),
          ),
        ),
      )
      const latest = one.builds[0]
      if (latest) await showBuild(t, latest.buildID)
    } catch (e) {
      fill(builds, h('p', { class: 'notice' }, `could not read it: ${errorText(e)}`))
    }
  }

  const load = async () => {
    try {
      const { data } = await call<Template[]>('/templates')
      if (gone) return
      fill(
        rows,
        ...(data.length
          ? data.map((t) =>
              h(
                'tr',
                { 'data-template': t.templateID },
                h('td', {}, h('button', { class: 'link', onclick: () => void showTemplate(t) }, (t.names ?? []).join(', ') || t.templateID)),
                h('td', { class: 'mono' }, t.templateID),
                h('td', {}, statusChip(t.buildStatus)),
                h('td', {}, String(t.buildCount ?? 0)),
                h('td', {}, String(t.spawnCount ?? 0)),
                h('td', {}, t.updatedAt ? when(t.updatedAt) : '–'),
                h('td', {}, h('button', { class: 'small danger', onclick: () => void remove(t) }, 'Delete')),
              ),
            )
          : [h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No templates of your team yet.'))]),
      )
      status.textContent = `${data.length}`
    } catch (e) {
      status.textContent = `could not list: ${errorText(e)}`
    }
  }

  const remove = async (t: Template) => {
    if (await removeTemplate(t.templateID, `template ${(t.names ?? [t.templateID])[0]}`)) {
      fill(builds)
      fill(buildArea)
    }
    await load()
  }

  void load()
  return () => {
    gone = true
  }
}
