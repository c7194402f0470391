// A shell in the browser: xterm.js on a PTY that envd runs, reached through
// the official SDK (`sandbox.pty`) straight at the sandbox's envd URL.
import { Terminal } from '@xterm/xterm'
import { FitAddon } from '@xterm/addon-fit'
import '@xterm/xterm/css/xterm.css'
import type { Sandbox } from 'e2b'

/** envd ends the shell after this (a PTY needs a deadline; 0 means "now"). */
const SHELL_LIFETIME_MS = 60 * 60 * 1000

export interface OpenTerminal {
  dispose(): void
}

export async function openTerminal(
  box: HTMLElement,
  sandbox: Sandbox,
  onExit: (message: string) => void,
): Promise<OpenTerminal> {
  const term = new Terminal({
    cursorBlink: true,
    fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, monospace',
    fontSize: 13,
    scrollback: 5000,
  })
  const fit = new FitAddon()
  term.loadAddon(fit)
  term.open(box)
  fit.fit()

  const handle = await sandbox.pty.create({
    cols: term.cols,
    rows: term.rows,
    timeoutMs: SHELL_LIFETIME_MS,
    onData: (data) => term.write(data),
  })
  const pid = handle.pid
  let closed = false

  // Keystrokes go one request at a time, batched while one is in flight:
  // concurrent requests could reach envd out of order.
  const encoder = new TextEncoder()
  let pending = ''
  let sending = false
  const flush = async () => {
    if (sending) return
    sending = true
    try {
      while (pending && !closed) {
        const chunk = pending
        pending = ''
        await sandbox.pty.sendInput(pid, encoder.encode(chunk))
      }
    } catch (e) {
      if (!closed) term.write(`\r\n[input failed: ${e instanceof Error ? e.message : String(e)}]\r\n`)
    } finally {
      sending = false
    }
  }
  const input = term.onData((s) => {
    pending += s
    void flush()
  })
  const resized = term.onResize(({ cols, rows }) => {
    if (!closed) sandbox.pty.resize(pid, { cols, rows }).catch(() => {})
  })
  const observer = new ResizeObserver(() => {
    try {
      fit.fit()
    } catch {
      // the box is hidden (another tab): nothing to fit
    }
  })
  observer.observe(box)

  handle
    .wait()
    .then(
      (r) => `shell exited (${r.exitCode})`,
      (e: unknown) => {
        const r = (e as { exitCode?: number }).exitCode
        return r !== undefined ? `shell exited (${r})` : `shell ended: ${e instanceof Error ? e.message : String(e)}`
      },
    )
    .then((message) => {
      if (closed) return
      closed = true
      term.write(`\r\n[${message}]\r\n`)
      onExit(message)
    })

  term.focus()
  return {
    dispose() {
      const wasOpen = !closed
      closed = true
      observer.disconnect()
      input.dispose()
      resized.dispose()
      if (wasOpen) handle.kill().catch(() => {})
      term.dispose()
    },
  }
}
