//! Which kernels this machine has: Jupyter kernelspecs
//! (`<data dir>/kernels/<name>/kernel.json`), and which one serves a language.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where Jupyter installs kernelspecs system-wide and for root, in the order
/// Jupyter itself prefers them.
pub const DEFAULT_DIRS: &[&str] = &[
    "/root/.local/share/jupyter/kernels",
    "/usr/local/share/jupyter/kernels",
    "/usr/share/jupyter/kernels",
];

/// The fields of `kernel.json` this server uses.
#[derive(Debug, Clone, Deserialize)]
pub struct KernelSpec {
    #[serde(skip)]
    pub name: String,
    /// The kernelspec's directory: `{resource_dir}` in `argv`.
    #[serde(skip)]
    pub resource_dir: PathBuf,
    pub argv: Vec<String>,
    #[serde(default)]
    pub language: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `signal` (default) or `message` (interrupt_request on the control channel).
    #[serde(default)]
    pub interrupt_mode: Option<String>,
    #[serde(default)]
    pub metadata: Metadata,
}

/// `metadata` of `kernel.json`: Jupyter leaves it to front ends; this
/// server reads its own key there.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub sandbar: SandbarMetadata,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SandbarMetadata {
    #[serde(default)]
    pub transport: Transport,
    /// For kernels that may publish a cell's result after reporting idle
    /// (Deno's does, now and then): how long a run that has no result yet
    /// waits for one once it is otherwise over.
    #[serde(default)]
    pub late_result_ms: Option<u64>,
}

/// How the server reaches a kernel's channels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Loopback TCP ports: Jupyter's default, which every kernel implements.
    #[default]
    Tcp,
    /// Unix sockets in the server's private directory, for kernels that
    /// implement them (ipykernel): only root can reach them and their names
    /// never collide. A kernelspec opts in with
    /// `"metadata": {"sandbar": {"transport": "ipc"}}`.
    Ipc,
}

impl KernelSpec {
    pub fn interrupts_by_message(&self) -> bool {
        self.interrupt_mode.as_deref() == Some("message")
    }

    pub fn transport(&self) -> Transport {
        self.metadata.sandbar.transport
    }

    pub fn late_result(&self) -> Option<std::time::Duration> {
        self.metadata
            .sandbar
            .late_result_ms
            .map(std::time::Duration::from_millis)
    }

    /// `argv` with `{resource_dir}` filled in (`{connection_file}` is left
    /// to the caller, which knows the file).
    pub fn command(&self) -> Vec<String> {
        let dir = self.resource_dir.display().to_string();
        self.argv
            .iter()
            .map(|a| a.replace("{resource_dir}", &dir))
            .collect()
    }
}

/// The kernelspecs found, by kernel name.
#[derive(Debug, Clone, Default)]
pub struct KernelSpecs {
    specs: BTreeMap<String, KernelSpec>,
}

impl KernelSpecs {
    /// Reads every `kernel.json` under `dirs`; the first dir wins a name.
    pub fn discover(dirs: &[PathBuf]) -> Self {
        let mut specs = BTreeMap::new();
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if specs.contains_key(&name) {
                    continue;
                }
                match read_spec(&entry.path().join("kernel.json")) {
                    Ok(mut spec) => {
                        spec.name = name.clone();
                        spec.resource_dir = entry.path();
                        specs.insert(name, spec);
                    }
                    Err(e) => tracing::warn!(kernel = %name, error = %e, "skipping kernelspec"),
                }
            }
        }
        Self { specs }
    }

    /// The kernel for `language` (already normalized): a kernel of that name,
    /// else one declaring that language (python prefers `python3`). A
    /// TypeScript kernel serves JavaScript too (Deno's declares typescript
    /// and runs both), and a JavaScript one TypeScript, as E2B's server maps
    /// TypeScript to its JavaScript kernel.
    pub fn for_language(&self, language: &str) -> Option<&KernelSpec> {
        if language == "python" {
            if let Some(spec) = self.specs.get("python3") {
                return Some(spec);
            }
        }
        let declaring = |language: &str| {
            self.specs
                .values()
                .find(|s| s.language.eq_ignore_ascii_case(language))
        };
        let sibling = match language {
            "javascript" => Some("typescript"),
            "typescript" => Some("javascript"),
            _ => None,
        };
        self.specs
            .get(language)
            .or_else(|| declaring(language))
            .or_else(|| sibling.and_then(|s| self.specs.get(s).or_else(|| declaring(s))))
    }

    /// Whether a kernel serves `language`.
    pub fn has(&self, language: &str) -> bool {
        self.for_language(language).is_some()
    }

    /// Languages with a kernel, for error messages.
    pub fn languages(&self) -> Vec<String> {
        let mut langs: Vec<String> = self
            .specs
            .values()
            .map(|s| {
                if s.language.is_empty() {
                    s.name.clone()
                } else {
                    s.language.to_lowercase()
                }
            })
            .collect();
        langs.sort();
        langs.dedup();
        langs
    }
}

fn read_spec(path: &Path) -> Result<KernelSpec, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let spec: KernelSpec =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if spec.argv.is_empty() {
        return Err(format!("{}: empty argv", path.display()));
    }
    Ok(spec)
}

/// The SDKs' language names to the ones kernels declare.
pub fn normalize_language(language: Option<&str>) -> String {
    match language.map(|l| l.trim().to_lowercase()) {
        None => "python".into(),
        Some(l) if l.is_empty() => "python".into(),
        Some(l) => match l.as_str() {
            "js" => "javascript".into(),
            "ts" => "typescript".into(),
            "node" | "nodejs" | "deno" => "javascript".into(),
            "python3" => "python".into(),
            "sh" | "shell" => "bash".into(),
            _ => l,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, json: &str) {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("kernel.json"), json).unwrap();
    }

    #[test]
    fn finds_kernels_by_name_or_language_and_the_first_dir_wins() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        write(
            a.path(),
            "python3",
            r#"{"argv":["python3","-m","ipykernel_launcher","-f","{connection_file}"],"display_name":"Python 3","language":"python"}"#,
        );
        write(
            b.path(),
            "python3",
            r#"{"argv":["other"],"display_name":"x","language":"python"}"#,
        );
        write(
            b.path(),
            "bash",
            r#"{"argv":["python3","-m","bash_kernel","-f","{connection_file}"],"display_name":"Bash","language":"bash"}"#,
        );
        write(
            b.path(),
            "ir",
            r#"{"argv":["R"],"display_name":"R","language":"R","interrupt_mode":"message"}"#,
        );
        write(b.path(), "broken", r#"{"argv":[]}"#);
        let specs = KernelSpecs::discover(&[a.path().into(), b.path().into()]);
        assert_eq!(specs.for_language("python").unwrap().argv[0], "python3");
        assert_eq!(
            specs.for_language("python").unwrap().resource_dir,
            a.path().join("python3")
        );
        assert_eq!(specs.for_language("bash").unwrap().name, "bash");
        let r = specs.for_language("r").unwrap();
        assert_eq!(r.name, "ir");
        assert!(r.interrupts_by_message());
        assert!(specs.for_language("javascript").is_none());
        assert!(!specs.has("typescript"));
        assert_eq!(specs.languages(), ["bash", "python", "r"]);
    }

    #[test]
    fn a_typescript_kernel_serves_javascript_and_the_reverse() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "deno",
            r#"{"argv":["deno","jupyter","--kernel","--conn","{connection_file}"],"language":"typescript"}"#,
        );
        let specs = KernelSpecs::discover(&[dir.path().into()]);
        assert_eq!(specs.for_language("javascript").unwrap().name, "deno");
        assert_eq!(specs.for_language("typescript").unwrap().name, "deno");
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "javascript",
            r#"{"argv":["node"],"language":"javascript"}"#,
        );
        let specs = KernelSpecs::discover(&[dir.path().into()]);
        assert_eq!(specs.for_language("typescript").unwrap().name, "javascript");
    }

    #[test]
    fn reads_the_transport_and_fills_in_the_resource_dir() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "java",
            r#"{"argv":["java","-jar","{resource_dir}/k.jar","{connection_file}"],"language":"java","metadata":{"other":1}}"#,
        );
        write(
            dir.path(),
            "python3",
            r#"{"argv":["python3"],"language":"python","metadata":{"sandbar":{"transport":"ipc","late_result_ms":30}}}"#,
        );
        let specs = KernelSpecs::discover(&[dir.path().into()]);
        let java = specs.for_language("java").unwrap();
        assert_eq!(java.transport(), Transport::Tcp);
        assert_eq!(
            java.command(),
            [
                "java".to_string(),
                "-jar".into(),
                format!("{}/k.jar", dir.path().join("java").display()),
                "{connection_file}".into()
            ]
        );
        assert_eq!(java.late_result(), None);
        let python = specs.for_language("python").unwrap();
        assert_eq!(python.transport(), Transport::Ipc);
        assert_eq!(
            python.late_result(),
            Some(std::time::Duration::from_millis(30))
        );
    }

    #[test]
    fn normalizes_the_sdks_language_names() {
        assert_eq!(normalize_language(None), "python");
        assert_eq!(normalize_language(Some(" Python ")), "python");
        assert_eq!(normalize_language(Some("js")), "javascript");
        assert_eq!(normalize_language(Some("ts")), "typescript");
        assert_eq!(normalize_language(Some("bash")), "bash");
        assert_eq!(normalize_language(Some("R")), "r");
        assert_eq!(normalize_language(Some("Java")), "java");
    }
}
