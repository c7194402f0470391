//! envd's control routes, which only the control plane may call (it reaches
//! envd directly, never through the public URL).

/// envd's port inside every sandbox.
pub const ENVD_PORT: u16 = 49983;

/// `/init` sets envd's access token and is exempt from its token check; the
/// others are envd control routes (snapshot, freeze, upgrade) that exist in
/// E2B's envd and would let a sandbox URL holder wedge or re-image the guest.
/// Refused whatever the method: envd answers 405 on a wrong method, which
/// would confirm the route exists.
const CONTROL_PATHS: &[&str] = &[
    "/init",
    "/upgrade",
    "/freeze",
    "/unfreeze",
    "/fsfreeze",
    "/fsthaw",
    "/collapse",
];

/// Whether `raw_path` (as sent: possibly percent-encoded, with `.`/`..` or
/// doubled slashes) names a control route. Decoding and normalizing first
/// makes this a superset of what envd's router would match.
pub fn is_control_path(raw_path: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(raw_path).decode_utf8_lossy();
    CONTROL_PATHS.contains(&normalize(&decoded).as_str())
}

fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_routes_in_every_spelling() {
        for p in [
            "/init",
            "/init/",
            "//init",
            "/files/../init",
            "/%69nit",
            "/./upgrade",
            "/freeze",
        ] {
            assert!(is_control_path(p), "{p}");
        }
        for p in [
            "/",
            "/files",
            "/health",
            "/initialize",
            "/process.Process/Start",
            "/INIT",
        ] {
            assert!(!is_control_path(p), "{p}");
        }
    }
}
