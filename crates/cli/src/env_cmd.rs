//! `sandbar env`: the `export` lines that point the official SDKs at this
//! server.
//!
//! Trusting the local CA: Node adds `NODE_EXTRA_CA_CERTS` to its roots. The
//! Python SDK (e2b 2.63) sends its requests through pyqwest (reqwest, with
//! rustls-native-certs roots) and its generated clients through httpx 0.28;
//! both read `SSL_CERT_FILE`, and both take it *instead of* the system roots,
//! so it points at a bundle of the system roots plus the local CA.
//! `REQUESTS_CA_BUNDLE` does the same for code using `requests`.

use anyhow::Result;

use crate::layout::DataDir;

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub fn run(data: &DataDir) -> Result<()> {
    let state = data.read_serve_state()?;
    let key = data.read_api_key()?;
    println!("export E2B_API_URL={}", quote(&state.api_url));
    println!("export E2B_DOMAIN={}", quote(&state.domain));
    println!("export E2B_API_KEY={}", quote(&key));
    if let Some(ca) = &state.ca_cert {
        println!(
            "export NODE_EXTRA_CA_CERTS={}",
            quote(&ca.display().to_string())
        );
    }
    if let Some(bundle) = &state.ca_bundle {
        let b = quote(&bundle.display().to_string());
        println!("export SSL_CERT_FILE={b}");
        println!("export REQUESTS_CA_BUNDLE={b}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(super::quote("a'b"), r"'a'\''b'");
        assert_eq!(super::quote("/x y"), "'/x y'");
    }
}
