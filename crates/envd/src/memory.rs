//! Keeping envd's resident set small: one envd runs in every sandbox.

/// Turns off fault-around on envd's own code. By default each page fault on
/// a file mapping also maps up to 64 KiB of neighbouring pages, so the little
/// code envd runs while idle keeps most of its text resident. With
/// MADV_RANDOM only the pages actually executed are mapped; the others are
/// one cheap minor fault (from the shared page cache) away.
pub fn trim_code_faults() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let exe = exe.to_string_lossy();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !line.ends_with(exe.as_ref()) || !perms.starts_with('r') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else {
            continue;
        };
        // SAFETY: the range is one of our own mappings, read from
        // /proc/self/maps; MADV_RANDOM only changes read-ahead policy and
        // never the mapping's contents.
        let rc = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_RANDOM) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "madvise(MADV_RANDOM) failed");
        }
    }
}
