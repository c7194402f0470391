//! Per-call env vars: code that sets them in a kernel before a run and puts
//! back the sandbox-wide values after it, in the kernel's own language
//! (a kernel's environment can only be changed from inside).

use std::collections::BTreeMap;

/// POSIX names only: anything else could not be exported by a shell and
/// would let a name smuggle code into the snippets below.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Languages whose kernels can have their environment changed by code.
pub fn supported(language: &str) -> bool {
    matches!(
        language,
        "python" | "bash" | "javascript" | "typescript" | "r" | "java"
    )
}

/// Code that sets `vars`, or None when there is nothing to set or the
/// language has no way here.
pub fn set_code(language: &str, vars: &BTreeMap<String, String>) -> Option<String> {
    if vars.is_empty() {
        return None;
    }
    code(language, vars, &[])
}

/// Code that gives each of `keys` back its sandbox-wide value (from
/// `globals`), or unsets it when it had none.
pub fn restore_code<'a>(
    language: &str,
    keys: impl IntoIterator<Item = &'a String>,
    globals: &BTreeMap<String, String>,
) -> Option<String> {
    let (mut reset, mut unset) = (BTreeMap::new(), Vec::new());
    for k in keys {
        match globals.get(k) {
            Some(v) => {
                reset.insert(k.clone(), v.clone());
            }
            None => unset.push(k.clone()),
        }
    }
    if reset.is_empty() && unset.is_empty() {
        return None;
    }
    code(language, &reset, &unset)
}

/// One snippet that sets `set` and removes `unset`, in `language`. Every
/// name is POSIX (checked by the caller) and every value a JSON string
/// literal, which is also a valid string literal in Python, JavaScript,
/// R and Java.
fn code(language: &str, set: &BTreeMap<String, String>, unset: &[String]) -> Option<String> {
    let lit = |s: &str| serde_json::to_string(s).expect("strings serialize");
    let list = |keys: &[String]| serde_json::to_string(keys).expect("strings serialize");
    let mut lines = Vec::new();
    match language {
        // A JSON object of strings is a valid Python dict literal.
        "python" => {
            if !set.is_empty() {
                lines.push(format!(
                    "__import__('os').environ.update({})",
                    serde_json::to_string(set).expect("strings serialize")
                ));
            }
            if !unset.is_empty() {
                lines.push(format!(
                    "for __sandbar_k in {}: __import__('os').environ.pop(__sandbar_k, None)\ndel __sandbar_k",
                    list(unset)
                ));
            }
        }
        "bash" => {
            lines.extend(
                set.iter()
                    .map(|(k, v)| format!("export {k}={}", shell_quote(v))),
            );
            if !unset.is_empty() {
                lines.push(format!("unset {}", unset.join(" ")));
            }
        }
        // `process.env` is the environment in Node and in Deno (whose
        // kernel serves both languages); no top-level bindings are left.
        "javascript" | "typescript" => {
            if !set.is_empty() {
                lines.push(format!(
                    "Object.assign(process.env, {});",
                    serde_json::to_string(set).expect("strings serialize")
                ));
            }
            if !unset.is_empty() {
                lines.push(format!(
                    "for (const __sandbarKey of {}) delete process.env[__sandbarKey];",
                    list(unset)
                ));
            }
        }
        "r" => {
            if !set.is_empty() {
                let pairs: Vec<String> = set
                    .iter()
                    .map(|(k, v)| format!("{} = {}", lit(k), lit(v)))
                    .collect();
                lines.push(format!("invisible(Sys.setenv({}))", pairs.join(", ")));
            }
            if !unset.is_empty() {
                let keys: Vec<String> = unset.iter().map(|k| lit(k)).collect();
                lines.push(format!("invisible(Sys.unsetenv(c({})))", keys.join(", ")));
            }
        }
        // A JVM's environment is read-only by API, and kept twice: the map
        // System.getenv() reads and the one ProcessBuilder.environment()
        // copies for child processes. Both are changed through reflection
        // (the kernelspec opens java.lang and java.util for it). A process
        // started without its environment() being read inherits the JVM's
        // native environment, which Java has no way to change. The values
        // are also set as system properties, which is what E2B's server
        // does and code written for it reads.
        "java" => {
            let mut body = Vec::new();
            for (k, v) in set {
                body.push(format!("System.setProperty({}, {});", lit(k), lit(v)));
            }
            for k in unset {
                body.push(format!("System.clearProperty({});", lit(k)));
            }
            body.push(
                "java.lang.reflect.Field __sandbarField = System.getenv().getClass().getDeclaredField(\"m\"); \
                 __sandbarField.setAccessible(true); \
                 java.lang.reflect.Field __sandbarChildField = Class.forName(\"java.lang.ProcessEnvironment\").getDeclaredField(\"theEnvironment\"); \
                 __sandbarChildField.setAccessible(true); \
                 java.lang.reflect.Constructor<?> __sandbarStrings = Class.forName(\"java.lang.ProcessEnvironment$StringEnvironment\").getDeclaredConstructor(java.util.Map.class); \
                 __sandbarStrings.setAccessible(true); \
                 @SuppressWarnings(\"unchecked\") java.util.List<java.util.Map<String, String>> __sandbarEnvs = java.util.List.of(\
                 (java.util.Map<String, String>) __sandbarField.get(System.getenv()), \
                 (java.util.Map<String, String>) __sandbarStrings.newInstance(__sandbarChildField.get(null)));"
                    .to_string(),
            );
            let mut each = Vec::new();
            for (k, v) in set {
                each.push(format!("__sandbarEnv.put({}, {});", lit(k), lit(v)));
            }
            for k in unset {
                each.push(format!("__sandbarEnv.remove({});", lit(k)));
            }
            body.push(format!(
                "for (java.util.Map<String, String> __sandbarEnv : __sandbarEnvs) {{ {} }}",
                each.join(" ")
            ));
            // A block, so that its variables do not join the user's.
            lines.push(format!("{{ {} }}", body.join(" ")));
        }
        _ => return None,
    }
    (!lines.is_empty()).then(|| lines.join("\n"))
}

fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn names_must_be_posix() {
        assert!(valid_name("FOO_1"));
        assert!(valid_name("_x"));
        assert!(!valid_name("1X"));
        assert!(!valid_name(""));
        assert!(!valid_name("A;rm"));
        assert!(!valid_name("A B"));
    }

    #[test]
    fn python_sets_and_restores_through_os_environ() {
        let set = set_code("python", &vars(&[("A", "it's \"x\"\n")])).unwrap();
        assert_eq!(
            set,
            r#"__import__('os').environ.update({"A":"it's \"x\"\n"})"#
        );
        let globals = vars(&[("A", "global")]);
        let keys = ["A".to_string(), "B".to_string()];
        let restore = restore_code("python", &keys, &globals).unwrap();
        assert!(restore.contains(r#"update({"A":"global"})"#));
        assert!(restore.contains(r#"for __sandbar_k in ["B"]"#));
    }

    #[test]
    fn bash_quotes_values() {
        let set = set_code("bash", &vars(&[("A", "it's $HOME")])).unwrap();
        assert_eq!(set, r"export A='it'\''s $HOME'");
        let restore = restore_code("bash", &["A".to_string()], &BTreeMap::new()).unwrap();
        assert_eq!(restore, "unset A");
    }

    #[test]
    fn javascript_uses_process_env() {
        let set = set_code("javascript", &vars(&[("A", "x\"y")])).unwrap();
        assert_eq!(set, r#"Object.assign(process.env, {"A":"x\"y"});"#);
        assert_eq!(
            set_code("typescript", &vars(&[("A", "x\"y")])).unwrap(),
            set
        );
        let restore = restore_code("javascript", &["B".to_string()], &BTreeMap::new()).unwrap();
        assert_eq!(
            restore,
            r#"for (const __sandbarKey of ["B"]) delete process.env[__sandbarKey];"#
        );
    }

    #[test]
    fn r_uses_sys_setenv() {
        let set = set_code("r", &vars(&[("A", "1"), ("B", "it's")])).unwrap();
        assert_eq!(set, r#"invisible(Sys.setenv("A" = "1", "B" = "it's"))"#);
        let globals = vars(&[("A", "g")]);
        let restore = restore_code("r", &["A".to_string(), "C".to_string()], &globals).unwrap();
        assert_eq!(
            restore,
            "invisible(Sys.setenv(\"A\" = \"g\"))\ninvisible(Sys.unsetenv(c(\"C\")))"
        );
    }

    #[test]
    fn java_sets_the_environment_and_system_properties_in_a_block() {
        let set = set_code("java", &vars(&[("A", "v\n")])).unwrap();
        assert!(set.starts_with('{') && set.ends_with('}'), "{set}");
        assert!(set.contains(r#"System.setProperty("A", "v\n");"#), "{set}");
        assert!(set.contains(r#"__sandbarEnv.put("A", "v\n");"#), "{set}");
        // Properties come first: they are set even if reflection fails.
        assert!(set.find("setProperty").unwrap() < set.find("getDeclaredField").unwrap());
        let restore = restore_code("java", &["A".to_string()], &BTreeMap::new()).unwrap();
        assert!(
            restore.contains(r#"System.clearProperty("A");"#),
            "{restore}"
        );
        assert!(
            restore.contains(r#"__sandbarEnv.remove("A");"#),
            "{restore}"
        );
    }

    #[test]
    fn other_languages_have_no_snippets() {
        assert!(set_code("cobol", &vars(&[("A", "1")])).is_none());
        assert!(!supported("cobol"));
        assert!(supported("java"));
        assert!(set_code("python", &BTreeMap::new()).is_none());
    }
}
