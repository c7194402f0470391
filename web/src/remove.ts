// Deleting a snapshot or a template (E2B names both `DELETE
// /templates/{id}`), after the user confirms; sandboxes started from either
// keep running.
import { call } from './api'
import { errorText, toast } from './dom'

/** Asks, deletes, says how it went; whether it was deleted. */
export async function removeTemplate(id: string, what: string): Promise<boolean> {
  if (!confirm(`Delete ${what}? Sandboxes started from it keep running.`)) return false
  try {
    await call(`/templates/${encodeURIComponent(id)}`, { method: 'DELETE' })
    toast(`Deleted ${what}`)
    return true
  } catch (e) {
    toast(`Delete failed: ${errorText(e)}`, 'error')
    return false
  }
}
