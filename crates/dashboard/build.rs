//! Embeds the built front-end (`web/dist`, made by `scripts/build-web.sh`)
//! into the crate: one `include_bytes!` per file, with a gzip copy of the
//! text files made here (served to clients that accept it) and an ETag.
//! Without `web/dist` it embeds `not-built/`, a page that says how to build
//! the dashboard, and warns: `cargo build` and `cargo test` work without
//! Node.js.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    let web = manifest.join("../../web");
    let dist = web.join("dist");

    let (root, built) = if dist.join("index.html").is_file() {
        println!("cargo:rerun-if-changed={}", dist.display());
        (dist, true)
    } else {
        println!(
            "cargo:warning=web/dist is missing: the dashboard is replaced by a page that says how to build it (run scripts/build-web.sh, then build again)"
        );
        // Rerun once a build of the front-end appears.
        println!("cargo:rerun-if-changed={}", web.display());
        let fallback = manifest.join("not-built");
        println!("cargo:rerun-if-changed={}", fallback.display());
        (fallback, false)
    };

    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    files.sort();

    let gz_dir = out.join("gz");
    fs::create_dir_all(&gz_dir).expect("creating OUT_DIR/gz");
    let mut code = String::from("pub(crate) static ASSETS: &[Asset] = &[\n");
    for (i, rel) in files.iter().enumerate() {
        let path = root.join(rel);
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let rel = rel.replace('\\', "/");
        let etag = format!("\"{:016x}\"", fnv1a(&bytes));
        let gzip = if compressible(&rel) && bytes.len() > 256 {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            enc.write_all(&bytes).expect("gzip in memory");
            let gz = enc.finish().expect("gzip in memory");
            if gz.len() < bytes.len() {
                let gz_path = gz_dir.join(format!("{i}.gz"));
                fs::write(&gz_path, gz).expect("writing a gzip copy");
                format!("Some(include_bytes!({:?}))", gz_path.display().to_string())
            } else {
                "None".into()
            }
        } else {
            "None".into()
        };
        writeln!(
            code,
            "    Asset {{ path: {rel:?}, body: include_bytes!({:?}), gzip: {gzip}, etag: {etag:?} }},",
            path.display().to_string()
        )
        .expect("writing to a String");
    }
    code.push_str("];\n");
    writeln!(code, "pub(crate) const BUILT: bool = {built};").expect("writing to a String");
    fs::write(out.join("assets.rs"), code).expect("writing assets.rs");
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.expect("a directory entry");
        let path = entry.path();
        if path.is_dir() {
            walk(root, &path, out);
        } else if path.is_file() {
            let rel = path.strip_prefix(root).expect("under root");
            out.push(rel.to_string_lossy().into_owned());
        }
    }
}

fn compressible(path: &str) -> bool {
    [".html", ".js", ".css", ".svg", ".json", ".txt", ".map"]
        .iter()
        .any(|ext| path.ends_with(ext))
}

/// A content hash for ETags (not security: clients only compare it).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
