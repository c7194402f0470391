//! `sandbar example js|python`: the program of the README, ready to run
//! against this server. They are the very files the platform suite runs, so
//! what the command prints is what CI proves works.

use anyhow::{bail, Result};

const JS: &str = include_str!("../../../tests/e2e/platform/seed.mjs");
const PYTHON: &str = include_str!("../../../tests/e2e/platform/seed.py");

/// How to run each example, for `--help` and the end of setup.sh, with the
/// SDK versions the test suite pins.
pub const HOW: &str = "\
  eval \"$(sandbar env)\"
  JavaScript (Node >= 20.18.1):
    mkdir sandbar-example && cd sandbar-example && npm init -y >/dev/null
    npm install @e2b/code-interpreter@2.8.0
    sandbar example js > seed.mjs && node seed.mjs
  Python (3.9+):
    python3 -m venv .venv && .venv/bin/pip install e2b-code-interpreter==2.11.5
    sandbar example python > seed.py && .venv/bin/python seed.py";

pub fn run(language: &str) -> Result<()> {
    let program = match language {
        "js" | "javascript" | "node" => JS,
        "python" | "py" => PYTHON,
        other => {
            bail!("no example for '{other}': try `sandbar example js` or `sandbar example python`")
        }
    };
    print!("{program}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_instructions_name_the_versions_the_suite_pins() {
        let pkg: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/e2e/package.json")).unwrap();
        let js = pkg["dependencies"]["@e2b/code-interpreter"]
            .as_str()
            .unwrap();
        assert!(super::HOW.contains(&format!("@e2b/code-interpreter@{js}")));
        let req = include_str!("../../../tests/e2e/requirements.txt");
        let py = req
            .lines()
            .find(|l| l.starts_with("e2b-code-interpreter=="))
            .unwrap();
        assert!(super::HOW.contains(py), "{py}");
    }
}
