// A file browser on envd's filesystem API (through the SDK): list a
// directory, go up and down, download a file, upload files into it.
import type { Sandbox } from 'e2b'
import { isNetworkFailure } from './api'
import { bytes, errorText, fill, h, toast } from './dom'

export function fileBrowser(box: HTMLElement, sandbox: Sandbox, start = '/home/user'): () => void {
  let cwd = start
  let gone = false
  const pathIn = h('input', { id: 'files-path', class: 'mono', value: cwd })
  const upload = h('input', { type: 'file', id: 'files-upload', multiple: true })
  const rows = h('tbody', { id: 'files-rows' })
  const status = h('span', { class: 'muted', id: 'files-status' })
  const bar = h(
    'form',
    { class: 'filters' },
    h('button', { type: 'button', id: 'files-up', onclick: () => void show(parent(cwd)) }, '↑ Up'),
    pathIn,
    h('button', { type: 'submit' }, 'Go'),
    h('button', { type: 'button', onclick: () => void show(cwd) }, 'Refresh'),
    h('label', { class: 'upload' }, 'Upload ', upload),
    status,
  )
  bar.addEventListener('submit', (e) => {
    e.preventDefault()
    void show(pathIn.value.trim() || '/')
  })
  upload.addEventListener('change', async () => {
    const files = [...(upload.files ?? [])]
    if (files.length === 0) return
    status.textContent = `uploading ${files.length} file(s)…`
    try {
      for (const f of files) {
        // Writing a file again does no harm: once more after a failure of
        // the network under it (see `isNetworkFailure`).
        await sandbox.files.write(join(cwd, f.name), f).catch((e: unknown) => {
          if (!isNetworkFailure(e)) throw e
          return sandbox.files.write(join(cwd, f.name), f)
        })
      }
      toast(`Uploaded ${files.map((f) => f.name).join(', ')} to ${cwd}`)
    } catch (e) {
      toast(`Upload failed: ${errorText(e)}`, 'error')
    }
    upload.value = ''
    await show(cwd)
  })
  fill(
    box,
    bar,
    h(
      'table',
      { class: 'list files' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Size'), h('th', {}, 'Permissions'), h('th', {}, 'Modified'), h('th', {}, ''))),
      rows,
    ),
  )

  async function show(path: string): Promise<void> {
    status.textContent = 'loading…'
    try {
      const entries = await sandbox.files.list(path)
      if (gone) return
      cwd = path
      pathIn.value = path
      entries.sort((a, b) => (a.type === b.type ? a.name.localeCompare(b.name) : a.type === 'dir' ? -1 : 1))
      fill(
        rows,
        ...entries.map((e) =>
          h(
            'tr',
            { 'data-file': e.name },
            h(
              'td',
              { class: 'mono' },
              e.type === 'dir'
                ? h('a', { href: '#', onclick: (ev: Event) => (ev.preventDefault(), void show(e.path)) }, `${e.name}/`)
                : e.name,
              e.symlinkTarget ? h('span', { class: 'muted' }, ` → ${e.symlinkTarget}`) : null,
            ),
            h('td', {}, e.type === 'dir' ? '' : bytes(e.size)),
            h('td', { class: 'mono' }, e.permissions),
            h('td', {}, e.modifiedTime ? e.modifiedTime.toLocaleString() : ''),
            h('td', {}, e.type === 'dir' ? '' : h('button', { class: 'small', onclick: () => void download(e.path, e.name) }, 'Download')),
          ),
        ),
      )
      status.textContent = `${entries.length} entries`
    } catch (e) {
      status.textContent = `could not list ${path}: ${errorText(e)}`
    }
  }

  async function download(path: string, name: string): Promise<void> {
    try {
      const blob = await sandbox.files.read(path, { format: 'blob' })
      const url = URL.createObjectURL(blob)
      const a = h('a', { href: url, download: name })
      document.body.appendChild(a)
      a.click()
      a.remove()
      setTimeout(() => URL.revokeObjectURL(url), 10_000)
    } catch (e) {
      toast(`Download failed: ${errorText(e)}`, 'error')
    }
  }

  void show(cwd)
  return () => {
    gone = true
  }
}

function parent(path: string): string {
  const p = path.replace(/\/+$/, '')
  const i = p.lastIndexOf('/')
  return i <= 0 ? '/' : p.slice(0, i)
}

function join(dir: string, name: string): string {
  return `${dir.replace(/\/+$/, '')}/${name}`
}
